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
    assert m._repr_html_().count("<img") == 7  # six image rows and one video frame
    video = m.show(4, where=pl.col("modality") == "video")
    assert len(video) == 1 and video._repr_html_().count("data:image/png;base64,") == 1
    assert "video" in repr(video)
