"""Small manifests of every modality, built with the public writer, for tests."""
from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
from PIL import Image

from manifests import ManifestWriter, build_schema, make_id

EXTRA = {"score_blur": pa.float32(), "tokens": pa.int64()}


def make_png(path: Path, size=(48, 32), color=(200, 30, 30)) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def sample_rows(media_dir: Path) -> list[dict]:
    """One row per modality, with real media files on disk (video rows carry metadata only)."""
    media_dir.mkdir(parents=True, exist_ok=True)
    img = make_png(media_dir / "a.png")
    img2 = make_png(media_dir / "b.png", (20, 60), (10, 200, 10))
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (0, 0, 255)).save(buf, format="PNG")

    def ref(path, kind="image", **kw):
        base = {"uri": str(path), "bytes": None, "kind": kind, "format": "PNG", "width": 48, "height": 32}
        base.update(kw)
        return base

    return [
        {"id": make_id("photos", "a.png"), "source": "photos", "modality": "image", "media": [ref(img)], "score_blur": 12.5, "tokens": 64},
        {
            "id": make_id("pairs", "row-0"),
            "source": "pairs",
            "modality": "image_text",
            "media": [ref(img), ref(img2, width=20, height=60), {"uri": None, "bytes": buf.getvalue(), "kind": "image", "format": "PNG", "width": 16, "height": 16}],
            "text": "three images, one embedded",
            "turns": [{"role": "user", "content": "what colour?"}, {"role": "assistant", "content": "red"}],
            "tokens": 200,
        },
        {"id": make_id("docs", "d.pdf#0"), "source": "docs", "modality": "document", "media": [ref(img, kind="page", page=0, dpi=72.0)], "text": "page text", "tokens": 80},
        {"id": make_id("licenses", "MIT"), "source": "licenses", "modality": "text", "text": "Permission is hereby granted", "tokens": 6},
        {
            "id": make_id("clips", "v.mp4"),
            "source": "clips",
            "modality": "video",
            "media": [{"uri": str(img), "kind": "video", "format": "mp4", "width": 64, "height": 48, "duration": 3.0, "fps": 25.0, "frames": 75, "rotation": 90}],
            "tokens": 192,
        },
    ]


def write_manifest(out: Path, media_dir: Path, *, shards: int = 2, dropped: int = 1) -> Path:
    rows = sample_rows(media_dir)
    w = ManifestWriter(out, build_schema(EXTRA))
    per = max(1, len(rows) // shards)
    for i in range(0, len(rows), per):
        w.write(pa.Table.from_pylist(rows[i : i + per], schema=w.schema))
    ledger = [
        {"id": make_id("photos", f"bad{i}.jpg"), "source": "photos", "stage": "read", "reason": "corrupt", "detail": "truncated", "uri": f"/x/bad{i}.jpg"}
        for i in range(dropped)
    ]
    if ledger:
        w.write_dropped(pa.Table.from_pylist(ledger))
    sources = {r["source"]: {"read": 0} for r in rows}
    for r in rows:
        sources[r["source"]]["read"] += 1
    sources["photos"]["read"] += dropped
    w.commit(recipe={"seed": 0}, sources=sources)
    return out
