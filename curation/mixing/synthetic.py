"""Synthetic metadata manifests (no media files), for the mixing benchmark and tests.

Rows look like curated rows of each modality: media references with sizes,
video durations, caption or document text, and turns. Built column-wise with
Arrow so ten million rows take seconds, not minutes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa

from manifests.schema import MEDIA_TYPE, TURN_TYPE, build_schema

#: modality -> (media kind, media per row low/high) ; "multi_image" is an image row with 2-4 images
_LAYOUT = {
    "image": ("image", 1, 1),
    "multi_image": ("image", 2, 4),
    "image_text": ("image", 1, 1),
    "document": ("page", 1, 4),
    "video": ("video", 1, 1),
    "text": (None, 0, 0),
}
_WORDS = np.frombuffer(b"the quick brown fox jumps over a lazy dog while seven wizards quietly box ", dtype=np.uint8)


def _text(rng: np.random.Generator, lengths: np.ndarray) -> pa.Array:
    """Strings of the given byte lengths cut from a repeated sentence (content is irrelevant, sizes are not)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    reps = total // len(_WORDS) + 2
    start = int(rng.integers(len(_WORDS)))
    data = np.tile(_WORDS, reps)[start : start + total]
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data.tobytes())).cast(
        pa.string()
    )


def synthetic_table(source: str, modality: str, n: int, rng: np.random.Generator, start: int = 0) -> pa.Table:
    """`n` rows of one source; `modality` is a manifest modality or "multi_image"."""
    kind, lo, hi = _LAYOUT[modality]
    manifest_modality = "image" if modality == "multi_image" else modality
    per_row = rng.integers(lo, hi + 1, size=n) if hi > 0 else np.zeros(n, dtype=np.int64)
    m = int(per_row.sum())
    offsets = pa.array(np.concatenate([[0], np.cumsum(per_row)]).astype(np.int32))
    if kind == "video":
        width = np.full(m, 640, dtype=np.int32)
        height = np.full(m, 360, dtype=np.int32)
        duration = rng.uniform(4, 300, size=m)
        fps = np.full(m, 30.0)
        frames = (duration * fps).astype(np.int64)
    elif kind == "page":
        width = np.full(m, 1700, dtype=np.int32)
        height = np.full(m, 2200, dtype=np.int32)
        duration = fps = None
        frames = None
    else:
        width = rng.integers(128, 2048, size=m).astype(np.int32)
        height = rng.integers(128, 2048, size=m).astype(np.int32)
        duration = fps = None
        frames = None
    ids = np.arange(start, start + m)
    children = {
        "uri": pa.array([f"/synthetic/{source}/{i}" for i in ids], pa.string()) if m else pa.array([], pa.string()),
        "bytes": pa.nulls(m, pa.binary()),
        "kind": pa.array([kind] * m, pa.string()) if kind else pa.nulls(m, pa.string()),
        "format": pa.nulls(m, pa.string()),
        "width": pa.array(width if m else [], pa.int32()),
        "height": pa.array(height if m else [], pa.int32()),
        "page": pa.nulls(m, pa.int32()),
        "dpi": pa.nulls(m, pa.float32()),
        "duration": pa.array(duration, pa.float64()) if duration is not None else pa.nulls(m, pa.float64()),
        "fps": pa.array(fps, pa.float64()) if fps is not None else pa.nulls(m, pa.float64()),
        "frames": pa.array(frames, pa.int64()) if frames is not None else pa.nulls(m, pa.int64()),
        "rotation": pa.nulls(m, pa.int16()),
    }
    # fields this generator does not model (clip spans, ...) are null, whatever the schema adds later
    arrays = [children.get(f.name, pa.nulls(m, f.type)) for f in MEDIA_TYPE]
    structs = pa.StructArray.from_arrays(arrays, fields=list(MEDIA_TYPE))
    media = pa.ListArray.from_arrays(offsets, structs)
    if hi == 0:
        media = pa.nulls(n, pa.list_(MEDIA_TYPE))
    text_len = {
        "text": rng.integers(40, 2000, size=n),
        "document": rng.integers(200, 3000, size=n),
        "image_text": rng.integers(20, 300, size=n),
    }.get(modality, rng.integers(10, 120, size=n))
    row_ids = np.arange(start, start + n)
    turns = None
    if modality in ("image", "multi_image", "video"):
        q = _text(rng, rng.integers(10, 80, size=n))
        a = _text(rng, rng.integers(5, 200, size=n))
        roles = pa.array(np.tile(np.array(["user", "assistant"], dtype=object), n), pa.string())
        contents = pa.concat_arrays([q, a]).take(pa.array(np.stack([np.arange(n), np.arange(n) + n], 1).ravel()))
        turns = pa.ListArray.from_arrays(
            pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
            pa.StructArray.from_arrays([roles, contents], fields=list(TURN_TYPE)),
        )
    return pa.table(
        {
            "id": pa.array([f"{source}-{i:09d}" for i in row_ids], pa.string()),
            "source": pa.array([source] * n, pa.string()).dictionary_encode().cast(pa.string()),
            "modality": pa.array([manifest_modality] * n, pa.string()),
            "media": media,
            "text": _text(rng, text_len) if modality != "image" else pa.nulls(n, pa.string()),
            "turns": turns if turns is not None else pa.nulls(n, pa.list_(TURN_TYPE)),
            "meta": pa.nulls(n, pa.string()),
        }
    )


def write_synthetic_manifest(
    out: str | os.PathLike,
    sources: Mapping[str, tuple[str, int]],
    *,
    seed: int = 0,
    shard_rows: int = 250_000,
    overwrite: bool = True,
) -> Path:
    """A committed manifest with `sources` = {name: (modality, rows)}, written shard by shard."""
    from manifests.writer import ManifestWriter

    rng = np.random.default_rng(seed)
    writer = ManifestWriter(out, build_schema(), overwrite=overwrite)
    for name, (modality, n) in sources.items():
        done = 0
        while done < n:
            k = min(shard_rows, n - done)
            writer.write(synthetic_table(name, modality, k, rng, start=done))
            done += k
    return writer.commit(recipe={"synthetic": {k: list(v) for k, v in sources.items()}, "seed": seed})
