"""`smolcurate export`: cauldron / llava / webdataset shards that datasets, webdataset and smolcurate's readers load back."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from curation.export import EXPORTERS, export_manifest
from manifests import ManifestWriter, build_schema, make_id
from manifests.cli import main as cli


def _png(size, color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _video(path: Path, frames: int = 12) -> Path:
    av = pytest.importorskip("av")
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


def img_ref(**kw):
    base = {"uri": None, "bytes": None, "kind": "image", "format": "PNG", "width": 32, "height": 24}
    base.update(kw)
    return base


@pytest.fixture()
def mixture(tmp_path: Path) -> tuple[Path, dict]:
    """A small mixture-like manifest: captions, a multi-image conversation, text, a video, a missing file, repeat."""
    jpg = tmp_path / "photo.jpg"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(jpg, quality=90)
    vid = _video(tmp_path / "clip.mp4")
    rows = [
        {"id": make_id("caps", "a"), "source": "caps", "modality": "image_text", "repeat": 3,
         "media": [img_ref(uri=str(jpg), format="JPEG", width=40, height=30)], "text": "a red photo"},
        {"id": make_id("caps", "b"), "source": "caps", "modality": "image_text", "repeat": 1,
         "media": [img_ref(bytes=_png((32, 24), (0, 0, 255)))], "text": "a blue square"},
        {"id": make_id("vqa", "c"), "source": "vqa", "modality": "image_text", "repeat": 2,
         "media": [img_ref(bytes=_png((32, 24), (0, 255, 0))), img_ref(bytes=_png((16, 16), (9, 9, 9)))],
         "turns": [{"role": "user", "content": "<image>left, <image>right: which is green?"},
                   {"role": "assistant", "content": "the left"}, {"role": "user", "content": "sure?"},
                   {"role": "assistant", "content": "yes"}], "meta": json.dumps({"split": "train"})},
        {"id": make_id("text", "d"), "source": "text", "modality": "text", "repeat": 1, "text": "plain text row"},
        {"id": make_id("clips", "e"), "source": "clips", "modality": "video", "repeat": 1,
         "media": [{"uri": str(vid), "bytes": None, "kind": "video", "format": "mp4", "width": 64, "height": 48,
                    "duration": 2.0, "fps": 6.0, "frames": 12}],
         "turns": [{"role": "user", "content": "what happens?"}, {"role": "assistant", "content": "it brightens"}]},
        {"id": make_id("caps", "gone"), "source": "caps", "modality": "image_text", "repeat": 1,
         "media": [img_ref(uri=str(tmp_path / "missing.png"))], "text": "lost"},
    ]
    schema = build_schema({"repeat": pa.int32()})
    w = ManifestWriter(tmp_path / "m", schema)
    w.write(pa.Table.from_pylist(rows[:3], schema=schema))
    w.write(pa.Table.from_pylist(rows[3:], schema=schema))
    w.commit(recipe={"seed": 0}, sources={"caps": {"read": 3}, "vqa": {"read": 1}, "text": {"read": 1}, "clips": {"read": 1}})
    return tmp_path / "m", {r["id"]: r for r in rows}


def test_cauldron_loads_in_datasets(mixture, tmp_path):
    import datasets

    path, rows = mixture
    res = export_manifest(path, "cauldron", tmp_path / "out", shard_rows=2)
    assert res.rows == 4 and res.skipped == {"unreadable_media": 1, "video_not_supported": 1}
    assert res.shards == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out/data/train-*.parquet"), split="train")
    assert ds.num_rows == 4
    by_id = {r["id"]: r for r in ds}
    a = by_id[make_id("caps", "a")]
    assert isinstance(a["images"][0], Image.Image) and a["images"][0].size == (40, 30)
    assert (tmp_path / "photo.jpg").read_bytes() == ds.with_format("arrow")[0:4]["images"][0][0]["bytes"].as_py()  # bytes as they were
    assert a["texts"] == [{"user": "", "assistant": "a red photo", "source": "caps"}] and a["repeat"] == 3
    c = by_id[make_id("vqa", "c")]
    assert [im.getpixel((0, 0)) for im in c["images"]] == [(0, 255, 0), (9, 9, 9)]
    assert c["texts"] == [{"user": "<image>left, <image>right: which is green?", "assistant": "the left", "source": "vqa"},
                          {"user": "sure?", "assistant": "yes", "source": "vqa"}]
    assert by_id[make_id("text", "d")]["images"] == []
    skipped = [json.loads(line) for line in (tmp_path / "out/skipped.jsonl").read_text().splitlines()]
    assert {s["id"]: s["reason"] for s in skipped} == {make_id("caps", "gone"): "unreadable_media", make_id("clips", "e"): "video_not_supported"}
    card = (tmp_path / "out/README.md").read_text()
    assert "`repeat` column is kept" in card and "load_dataset" in card and "path: data/train-*.parquet" in card
    assert datasets.load_dataset(str(tmp_path / "out"), split="train").num_rows == 4  # the card's configs


def test_llava_loads_in_datasets_with_media_files(mixture, tmp_path):
    import datasets

    path, rows = mixture
    res = export_manifest(path, "llava", tmp_path / "out")
    assert res.rows == 5 and res.skipped == {"unreadable_media": 1}
    recs = [json.loads(line) for line in (tmp_path / "out" / res.shards[0]).read_text().splitlines()]
    by_id = {r["id"]: r for r in recs}
    a = by_id[make_id("caps", "a")]
    assert (tmp_path / "out" / a["image"]).read_bytes() == (tmp_path / "photo.jpg").read_bytes()
    assert a["conversations"] == [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "a red photo"}]
    c = by_id[make_id("vqa", "c")]
    assert len(c["images"]) == 2 and c["conversations"][0]["value"].count("<image>") == 2
    e = by_id[make_id("clips", "e")]
    assert (tmp_path / "out" / e["video"]).read_bytes() == (tmp_path / "clip.mp4").read_bytes()
    assert e["conversations"][0] == {"from": "human", "value": "<video>what happens?"}
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "out/train-*.jsonl"), split="train")
    assert sorted(ds["id"]) == sorted(by_id)


def test_webdataset_loads_with_the_webdataset_library(mixture, tmp_path):
    wds = pytest.importorskip("webdataset")
    path, rows = mixture
    res = export_manifest(path, "webdataset", tmp_path / "out", shard_rows=3)
    assert res.shards == ["shard-000000.tar", "shard-000001.tar"] and res.rows == 5
    urls = str(tmp_path / "out/shard-{000000..000001}.tar")
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("pil"))
    by_key = {s["__key__"]: s for s in samples}
    assert sorted(by_key) == sorted(k for k in rows if k != make_id("caps", "gone"))
    a = by_key[make_id("caps", "a")]
    assert a["txt"] == "a red photo" and a["json"]["repeat"] == 3 and a["jpg"].size == (40, 30)
    c = by_key[make_id("vqa", "c")]
    assert c["0.png"].getpixel((0, 0)) == (0, 255, 0) and c["json"]["turns"][1]["content"] == "the left"
    assert by_key[make_id("clips", "e")]["mp4"] == (tmp_path / "clip.mp4").read_bytes()
    # deterministic bytes
    export_manifest(path, "webdataset", tmp_path / "again", shard_rows=3)
    assert (tmp_path / "out/shard-000000.tar").read_bytes() == (tmp_path / "again/shard-000000.tar").read_bytes()


def test_cli_export_and_its_errors(mixture, tmp_path, capsys):
    path, _ = mixture
    assert cli(["export", str(path), "--format", "cauldron", "--out", str(tmp_path / "o")]) == 0
    assert "exported 4 rows as cauldron" in capsys.readouterr().out
    assert cli(["export", str(path), "--format", "cauldron", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--overwrite" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli(["export", str(path), "--format", "cauldron", "--out", str(tmp_path / "o"), "--overwrite"]) == 0
    assert sorted(EXPORTERS) == ["cauldron", "llava", "webdataset"]


def test_collator_reads_the_export_back(mixture, tmp_path):
    """The cauldron export feeds the collator straight from `datasets` (the HF-side training path)."""
    import datasets

    import tokenization
    from tokenization.base_tokenizer import train_bpe
    from tokenization.collate import IGNORE_INDEX, SmolVLMCollator

    path, _ = mixture
    export_manifest(path, "cauldron", tmp_path / "out")
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out/data/*.parquet"), split="train")
    rows = [{"id": r["id"], "images": r["images"],
             "turns": [t for p in r["texts"] for t in ({"role": "user", "content": p["user"]}, {"role": "assistant", "content": p["assistant"]})]}
            for r in ds]
    col = SmolVLMCollator(tokenization.get_strategy("smolvlm-256m", do_split=False), train_bpe(["a red photo the left yes"] * 20, vocab_size=300))
    batch = col(rows)
    assert batch["input_ids"].shape[0] == 4 and batch["pixel_values"].shape[1] == 2
    assert (batch["labels"] != IGNORE_INDEX).any(dim=1).all()


# ------------------------------------------------------------------ back through smolcurate's readers
def _read_back(export_dir: Path, fmt: str, kind: str = "image_text", **source) -> list[dict]:
    pytest.importorskip(f"curation.readers.{fmt}")
    from curation.readers import SourceContext, read_source
    from curation.recipe import Recipe

    recipe = Recipe.model_validate({"sources": [{"name": "back", "kind": kind, "path": str(export_dir), "format": fmt, **source}]})
    out = []
    for table in read_source(SourceContext.of(recipe, 0)):
        out += table.to_pylist()
    return out


@pytest.mark.parametrize("fmt", ["cauldron", "llava", "webdataset"])
def test_smolcurate_readers_read_an_export_back(mixture, tmp_path, fmt):
    path, rows = mixture
    export_manifest(path, fmt, tmp_path / "out")
    extra = {"id_column": "id"} if fmt == "cauldron" else {}
    got = _read_back(tmp_path / "out" / ("data" if fmt == "cauldron" else ""), fmt, **extra)
    ok = [r for r in got if not r.get("_drop_reason")]
    ids = {json.loads(r["meta"])["id"]: r for r in ok}
    for rid, r in ids.items():
        assert make_id("back", r["_key"]) == r["id"]  # ids derive from the exported keys, which hold the original id
        assert rid in r["_key"]
    orig = rows[make_id("vqa", "c")]
    if fmt in ("cauldron", "llava"):
        assert set(ids) == {k for k, v in rows.items() if k != make_id("caps", "gone") and (fmt == "llava" or v["modality"] != "video")}
        assert ids[make_id("vqa", "c")]["turns"] == orig["turns"]
        assert ids[make_id("caps", "b")]["turns"] == [{"role": "user", "content": "<image>"}, {"role": "assistant", "content": "a blue square"}]
        im = ids[make_id("vqa", "c")]["media"]
        assert len(im) == 2
    else:  # the webdataset reader reads samples with images: captions (.txt) and turns (from the .json)
        assert {make_id("caps", "a"), make_id("caps", "b"), make_id("vqa", "c")} <= set(ids)
        assert ids[make_id("caps", "a")]["text"] == "a red photo"
        assert ids[make_id("caps", "b")]["text"] == "a blue square"
        assert ids[make_id("vqa", "c")]["turns"] == orig["turns"] and len(ids[make_id("vqa", "c")]["media"]) == 2
    from media.refs import decode_image_ref

    back = decode_image_ref(ids[make_id("caps", "b")]["media"][0])
    assert back.getpixel((0, 0)) == (0, 0, 255)
