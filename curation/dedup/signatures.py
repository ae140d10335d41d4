"""Signature operators: the map-stage half of dedup.

They run per batch after reading and filtering, on either engine, and only
*add* columns (``sig_*``); the global resolve stage (:mod:`curation.dedup.resolve`)
reads those columns back from the written chunks. Columns:

========== ======================= ===============================================
column     type                    meaning
========== ======================= ===============================================
sig_bytes  binary(16)              blake2b-128 of the sample's source files/bytes
sig_pixels list<binary(16)>        blake2b-128 of each image's decoded RGB pixels
                                   and size (a video: of its sampled frames)
sig_phash  list<uint64>            pHash of each image / document page (<= max_items)
sig_detail float32                 lowest low-frequency detail among those images
sig_color  list<float32>           (mean Cb, mean Cr, chroma magnitude) per hashed image
sig_vhash  list<uint64>            pHash of ``video.frames`` frames, first to last
sig_vdetail list<float32>          detail of each of those frames
sig_area   int64                   largest width*height among the media (ranking)
sig_nbytes int64                   encoded size of the media (ranking: less compressed wins)
sig_text   binary(16)              blake2b-128 of the normalized text
sig_minhash list<uint32>           one-permutation MinHash of the text's n-grams
sig_textlen int32                  length of the normalized text (ranking)
========== ======================= ===============================================

A row whose media fail to decode gets nulls for what could not be computed;
dropping undecodable media is the filters' job, not dedup's.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from curation.dedup.config import DedupConfig
from curation.dedup.minhash import EMPTY, minhash_signatures, normalize_text
from curation.dedup.phash import DECODE_SIDE, chroma_moments, color_thumb, frames_to_thumbs, phash_thumbs, thumbnail
from curation.operators import Operator
import media as M
from media import refs as R

HASH_BYTES = 16
DIGEST = pa.binary(HASH_BYTES)

MEDIA_COLUMNS: dict[str, pa.DataType] = {
    "sig_bytes": DIGEST,
    "sig_pixels": pa.list_(DIGEST),
    "sig_phash": pa.list_(pa.uint64()),
    "sig_detail": pa.float32(),
    "sig_color": pa.list_(pa.float32()),
    "sig_vhash": pa.list_(pa.uint64()),
    "sig_vdetail": pa.list_(pa.float32()),
    "sig_area": pa.int64(),
    "sig_nbytes": pa.int64(),
}
TEXT_COLUMNS: dict[str, pa.DataType] = {
    "sig_text": DIGEST,
    "sig_minhash": pa.list_(pa.uint32()),
    "sig_textlen": pa.int32(),
}
SIGNATURE_COLUMNS: dict[str, pa.DataType] = {**MEDIA_COLUMNS, **TEXT_COLUMNS}

_CHUNK = 1 << 20


def digest(data: bytes | memoryview) -> bytes:
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


def file_digest(path: str) -> bytes:
    """blake2b-128 of a file, streamed (videos and PDFs can be large)."""
    h = hashlib.blake2b(digest_size=HASH_BYTES)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.digest()


def pixel_digest(arr: np.ndarray) -> bytes:
    """Hash of decoded pixels with their shape, so a 2x8 and a 4x4 image of the same bytes differ."""
    arr = np.ascontiguousarray(arr)
    h = hashlib.blake2b(digest_size=HASH_BYTES)
    h.update(np.asarray(arr.shape, dtype=np.int64).tobytes())
    h.update(memoryview(arr).cast("B"))
    return h.digest()


def combine_digests(parts: Iterable[bytes]) -> bytes:
    """One digest for an ordered list of digests; a single part is returned as is (a file equals itself)."""
    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    return digest(b"".join(parts))


def row_text(text: str | None, turns: list[Mapping[str, Any]] | None) -> str:
    """The text a row is deduplicated on: its text, else its conversation turns joined."""
    if text:
        return text
    if turns:
        return "\n".join(str(t.get("content") or "") for t in turns)
    return ""


def _bytes_key(ref: Mapping[str, Any]) -> tuple[str, Any]:
    """("b", digest of embedded bytes) or ("u", local path): one key per distinct source of a row."""
    try:
        src = R.ref_source(ref)
    except M.MediaError:  # neither uri nor bytes: unreadable, like a missing file
        src = ""
    return ("b", digest(src)) if isinstance(src, bytes) else ("u", src)


class MediaSignatures(Operator):
    """Exact and perceptual hashes of a row's images, document pages and videos."""

    stage = "dedup"
    columns = MEDIA_COLUMNS

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        evals = bool(self.config.decontaminate)
        # decontamination needs pixel hashes and pHashes even where dedup of that kind is off
        self.want_pixels = self.config.exact_cfg.pixels or evals
        self.want_phash = self.config.image.enabled or evals

    def __call__(self, table: pa.Table) -> pa.Table:
        media = table.column("media").to_pylist() if "media" in table.column_names else [None] * table.num_rows
        cols: dict[str, list] = {name: [] for name in MEDIA_COLUMNS}
        thumbs: list[np.ndarray] = []
        colors: list[np.ndarray] = []
        owners: list[int] = []  # row of each image thumbnail
        for row, items in enumerate(media):
            out = self._row(items or [], thumbs, colors, owners, row)
            for name in MEDIA_COLUMNS:
                cols[name].append(out.get(name))
        # one batched DCT for every image thumbnail of the batch
        if thumbs:
            hashes, detail = phash_thumbs(np.stack(thumbs))
            chroma = chroma_moments(np.stack(colors))
            owner = np.asarray(owners)
            for row in np.unique(owner):
                sel = owner == row
                cols["sig_phash"][row] = hashes[sel].tolist()
                cols["sig_detail"][row] = float(detail[sel].min())
                cols["sig_color"][row] = chroma[sel].reshape(-1).tolist()
        for name, typ in MEDIA_COLUMNS.items():
            table = _set(table, name, pa.array(cols[name], type=typ))
        return table

    def _row(self, items: list[Mapping[str, Any]], thumbs: list, colors: list, owners: list, row: int) -> dict[str, Any]:
        cfg = self.config
        exact = cfg.exact_cfg
        want_pixels, want_phash = self.want_pixels, self.want_phash
        out: dict[str, Any] = {}
        if not items:
            return out
        # exact bytes: each distinct source once (pages of one PDF share a file)
        sources: dict[tuple[str, Any], Mapping[str, Any]] = {}
        for ref in items:
            sources.setdefault(_bytes_key(ref), ref)
        nbytes = 0
        for (how, key), ref in sources.items():
            try:
                nbytes += len(ref["bytes"]) if how == "b" else os.path.getsize(key)
            except OSError:
                pass
        out["sig_nbytes"] = nbytes
        if exact.bytes:
            try:
                out["sig_bytes"] = combine_digests(key if how == "b" else file_digest(key) for how, key in sources)
            except OSError:
                out["sig_bytes"] = None
        area = [int(ref["width"]) * int(ref["height"]) for ref in items if ref.get("width") and ref.get("height")]
        pixels: list[bytes] = []
        n_images = 0
        for ref in items:
            kind = (ref.get("kind") or "image").lower()
            try:
                if kind == "video":
                    if not cfg.video.enabled and not want_pixels:
                        continue
                    frames = R.decode_video_ref(ref, cfg.video.frames, max_side=DECODE_SIDE)
                    if len(frames) == 0:
                        continue
                    if want_pixels:
                        pixels.append(pixel_digest(frames))
                    if cfg.video.enabled and out.get("sig_vhash") is None:
                        h, d = phash_thumbs(frames_to_thumbs(frames))
                        out["sig_vhash"] = h.tolist()
                        out["sig_vdetail"] = d.tolist()
                    if not area:
                        area.append(int(frames.shape[1]) * int(frames.shape[2]))
                    continue
                if n_images >= cfg.image.max_items and not want_pixels:
                    continue
                if kind == "page":
                    if n_images >= cfg.image.max_items or not want_phash:
                        continue
                    img = R.decode_image_ref(ref, max_side=DECODE_SIDE)
                    thumbs.append(thumbnail(img))
                    colors.append(color_thumb(img))
                    owners.append(row)
                    n_images += 1
                    continue
                if want_pixels:
                    full = M.open_image(R.ref_source(ref), mode="RGB")
                    pixels.append(pixel_digest(np.asarray(full)))
                    if not area:
                        area.append(full.width * full.height)
                    small = full
                else:
                    small = M.open_image(R.ref_source(ref), max_side=DECODE_SIDE, mode="RGB")
                if want_phash and n_images < cfg.image.max_items:
                    if max(small.size) > 4 * DECODE_SIDE:
                        small = small.copy()
                        small.thumbnail((DECODE_SIDE, DECODE_SIDE), reducing_gap=2.0)
                    thumbs.append(thumbnail(small))
                    colors.append(color_thumb(small))
                    owners.append(row)
                    n_images += 1
            except (M.MediaError, OSError, ValueError):
                continue
        if pixels:
            out["sig_pixels"] = pixels
        if area:
            out["sig_area"] = max(area)
        return out


class TextSignatures(Operator):
    """Exact hash and MinHash of a row's text (or its conversation turns), one numpy pass per batch."""

    stage = "dedup"
    columns = TEXT_COLUMNS

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        texts = table.column("text").to_pylist() if "text" in table.column_names else [None] * n
        turns = table.column("turns").to_pylist() if "turns" in table.column_names else [None] * n
        raw = [row_text(t, c) for t, c in zip(texts, turns)]
        norm = [normalize_text(t) if t else "" for t in raw]
        textlen = pa.array([len(t) if t else None for t in norm], type=pa.int32())
        sig_text = pa.array([digest(t.encode("utf-8", "surrogatepass")) if t else None for t in norm], type=DIGEST)
        cfg = self.config.text
        evals = bool(self.config.decontaminate)
        if cfg.enabled or evals:
            sigs = minhash_signatures(raw, num_perm=cfg.num_perm, ngram=cfg.ngram, seed=cfg.seed, unit=cfg.unit)
            valid = ~(sigs == EMPTY).all(axis=1) if n else np.zeros(0, bool)
            flat = pa.array(sigs.reshape(-1), type=pa.uint32())
            offsets = pa.array(np.arange(n + 1, dtype=np.int32) * cfg.num_perm, type=pa.int32())
            mask = pa.array(~valid)
            minhash = pa.ListArray.from_arrays(offsets, flat, mask=mask)
        else:
            minhash = pa.nulls(n, pa.list_(pa.uint32()))
        table = _set(table, "sig_text", sig_text if (self.config.exact_cfg.text or evals) else pa.nulls(n, DIGEST))
        table = _set(table, "sig_minhash", minhash)
        table = _set(table, "sig_textlen", textlen)
        return table


def _set(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    idx = table.schema.get_field_index(name)
    if idx >= 0:
        return table.set_column(idx, name, values)
    return table.append_column(name, values)


def signature_operators(config: DedupConfig | Mapping[str, Any] | None = None) -> list[Operator]:
    """The map-stage operators a recipe's ``dedup:`` section needs, in order."""
    cfg = config if isinstance(config, DedupConfig) else DedupConfig.model_validate(dict(config or {}))
    return [MediaSignatures(cfg), TextSignatures(cfg)]


def signature_columns() -> dict[str, pa.DataType]:
    """Every column the signature operators may add (declare them in the manifest schema)."""
    return dict(SIGNATURE_COLUMNS)


def compute_signatures(table: pa.Table, config: DedupConfig | None = None) -> pa.Table:
    """Apply both signature operators to a manifest-shaped table (no engine needed)."""
    for op in signature_operators(config):
        op.setup()
        table = op(table)
    return table
