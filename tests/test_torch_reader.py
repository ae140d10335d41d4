"""The torch reader decodes samples, splits shards across workers, and honours repeat counts."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
import torch
from torch.utils.data import DataLoader

from manifests import ManifestWriter, build_schema, make_id, open_manifest
from tests.manifest_fixtures import make_png


def _video(path: Path, frames: int = 12) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=6)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            arr = np.full((48, 64, 3), i * 20 % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture()
def media_manifest(tmp_path: Path) -> Path:
    img = make_png(tmp_path / "a.png", (40, 30))
    vid = _video(tmp_path / "v.mp4")
    schema = build_schema({"repeat": pa.int32()})
    w = ManifestWriter(tmp_path / "m", schema)
    rows = [
        {"id": make_id("p", f"{i}"), "source": "p", "modality": "image",
         "media": [{"uri": str(img), "kind": "image", "width": 40, "height": 30}], "repeat": 1 + (i == 0)}
        for i in range(6)
    ]
    rows.append({"id": make_id("v", "v.mp4"), "source": "v", "modality": "video",
                 "media": [{"uri": str(vid), "kind": "video", "frames": 12, "width": 64, "height": 48}], "repeat": 1})
    for i in range(0, len(rows), 3):
        w.write(pa.Table.from_pylist(rows[i : i + 3], schema=schema))
    w.commit()
    return tmp_path / "m"


def test_decodes_images_and_video_frames(media_manifest: Path):
    samples = list(open_manifest(media_manifest).to_torch(decode="tensor", video_frames=4))
    images = [s for s in samples if s["modality"] == "image"]
    video = [s for s in samples if s["modality"] == "video"][0]
    assert images[0]["images"][0].shape == (3, 30, 40) and images[0]["images"][0].dtype == torch.uint8
    assert video["frames"].shape == (4, 3, 48, 64)
    pil = next(iter(open_manifest(media_manifest).to_torch(decode="pil")))
    assert pil["images"][0].size == (40, 30)


def test_repeat_counts_are_honoured(media_manifest: Path):
    m = open_manifest(media_manifest)
    with_repeat = [s["id"] for s in m.to_torch(decode=False)]
    without = [s["id"] for s in m.to_torch(decode=False, honor_repeat=False)]
    assert len(with_repeat) == 8 and len(without) == 7
    assert with_repeat.count(make_id("p", "0")) == 2


@pytest.mark.parametrize("workers", [2, 4])
def test_workers_split_rows_without_overlap(media_manifest: Path, workers: int):
    m = open_manifest(media_manifest)
    loader = DataLoader(m.to_torch(decode=False, honor_repeat=False), batch_size=None, num_workers=workers)
    ids = [s["id"] for s in loader]
    assert sorted(ids) == sorted(m.table(columns=["id"]).column("id").to_pylist())


def test_repeats_are_spread_across_passes(media_manifest: Path):
    ids = [s["id"] for s in open_manifest(media_manifest).to_torch(decode=False)]
    first = make_id("p", "0")
    positions = [i for i, x in enumerate(ids) if x == first]
    assert positions[0] < 7 <= positions[1], "the second copy comes after one full pass"


def test_notebook_views_draw_image_and_video_thumbnails(media_manifest: Path):
    import polars as pl

    m = open_manifest(media_manifest)
    assert m._repr_html_().count("<img") == 10  # six image rows and a strip of four video frames
    video = m.show(4, where=pl.col("modality") == "video")
    assert len(video) == 1 and video._repr_html_().count("data:image/jpeg;base64,") == 4, "a frame strip of small JPEGs"
    assert "video" in repr(video)


@pytest.fixture()
def sig_mixture(tmp_path: Path) -> Path:
    """A manifest with a repeat column, binary dedup signatures, embedded and path images, and a video."""
    import io

    from PIL import Image

    img = make_png(tmp_path / "a.png", (40, 30))
    buf = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 0, 255)).save(buf, format="PNG")
    vid = _video(tmp_path / "v.mp4")
    schema = build_schema({"sig_pixels": pa.binary(16), "sig_minhash": pa.list_(pa.uint64()), "tokens": pa.int64(),
                           "score_min_side": pa.int32(), "repeat": pa.int32()})
    rows = [
        {"id": "a", "source": "p", "modality": "image", "media": [{"uri": str(img), "kind": "image", "format": "PNG"}],
         "sig_pixels": b"x" * 16, "tokens": 10, "score_min_side": 30, "repeat": 3},
        {"id": "b", "source": "p", "modality": "image", "media": [{"bytes": buf.getvalue(), "kind": "image", "format": "PNG"}],
         "sig_pixels": b"y" * 16, "tokens": 11, "score_min_side": None, "repeat": 1},
        {"id": "c", "source": "t", "modality": "text", "text": "hello", "sig_minhash": [1, 2, 3], "tokens": 2, "repeat": 2},
        {"id": "d", "source": "v", "modality": "video", "media": [{"uri": str(vid), "kind": "video", "frames": 12}],
         "tokens": 50, "repeat": 1},
    ]
    w = ManifestWriter(tmp_path / "mix", schema)
    w.write(pa.Table.from_pylist(rows, schema=schema))
    w.commit()
    return tmp_path / "mix"


EXPECTED = ["a", "b", "c", "d", "a", "c", "a"]  # pass j holds the rows whose repeat exceeds j


def test_hf_torch_format_images_and_repeat(sig_mixture: Path):
    import datasets

    m = open_manifest(sig_mixture)
    hf = m.to_hf()
    assert hf["id"] == EXPECTED, "HF honours repeat in the torch reader's pass order"
    assert m.to_hf(repeat=False)["id"] == ["a", "b", "c", "d"]
    assert isinstance(hf.features["images"], (datasets.Sequence, datasets.List))
    assert "sig_pixels" not in hf.column_names and "sig_pixels" in m.to_hf(signatures=True).column_names
    t = hf.with_format("torch")
    row = t[0]
    assert row["images"][0].shape == (3, 30, 40) and row["tokens"].item() == 10
    assert t[1]["images"][0].shape == (3, 10, 20), "embedded bytes decode as an Image too"
    assert len(t[3]["images"]) == 0, "a video is not an image"
    batch = t[:4]
    assert batch["tokens"].tolist() == [10, 11, 2, 50]
    hf.to_pandas()  # pandas formatting no longer trips over fixed_size_binary
    assert m.to_pandas().shape[0] == 4 and "sig_pixels" in m.to_pandas(signatures=True).columns


def test_torch_tensor_decode_collates_in_a_dataloader(sig_mixture: Path):
    ds = open_manifest(sig_mixture).to_torch(decode="tensor", video_frames=4)
    batches = list(DataLoader(ds, batch_size=3, collate_fn=ds.collate))
    ids = [i for b in batches for i in b["id"]]
    assert ids == EXPECTED
    first = batches[0]
    assert first["tokens"].tolist() == [10, 11, 2]
    assert first["score_min_side"] == [30, None, None], "None stays a list instead of failing default_collate"
    assert isinstance(first["images"], list) and first["images"][0][0].shape == (3, 30, 40)
    frames = [b["frames"] for b in batches if "frames" in b]
    assert frames and any(f is not None and f.shape == (4, 3, 48, 64) for f in frames[0])
    assert "sig_pixels" not in first
    assert [i for b in ds.loader(batch_size=2, num_workers=2) for i in b["id"]].count("a") == 3


@pytest.mark.ray
def test_ray_iter_torch_batches_and_repeat(sig_mixture: Path, ray_session):
    from manifests.torch_dataset import ray_collate

    m = open_manifest(sig_mixture)
    ds = m.to_ray()
    assert sorted(ds.select_columns(["id"]).to_pandas()["id"]) == sorted(EXPECTED)
    assert m.to_ray(repeat=False).count() == 4
    assert "sig_pixels" not in ds.schema().names
    got = []
    for batch in ds.iter_torch_batches(batch_size=4, collate_fn=ray_collate):
        assert isinstance(batch["tokens"], torch.Tensor)
        got += list(batch["id"])
    assert sorted(got) == sorted(EXPECTED)
    numeric = m.to_ray().select_columns(["tokens", "repeat"])
    assert sum(len(b["tokens"]) for b in numeric.iter_torch_batches(batch_size=3)) == 7, "Ray's own collate on numeric columns"
