"""Signature operators: the map-stage half of dedup.

They run per batch after reading and filtering, on either engine, and only
*add* columns (``sig_*``); the global resolve stage (:mod:`curation.dedup.resolve`)
reads those columns back from the written chunks. Columns:

========== ======================= ===============================================
column     type                    meaning
========== ======================= ===============================================
sig_bytes  binary(16)              XXH3-128 of the sample's source files/bytes
sig_pixels list<binary(16)>        XXH3-128 of each image's decoded RGB pixels
                                   and size (a video: of its sampled frames)
sig_phash  list<uint64>            pHash of each image / document page (<= max_items)
sig_detail float32                 lowest low-frequency detail among those images
sig_color  list<float32>           (mean Cb, mean Cr, chroma magnitude) per hashed image
sig_vhash  list<uint64>            pHash of ``video.frames`` frames, first to last
sig_vdetail list<float32>          detail of each of those frames
sig_vthumb list<binary>            48x48 grey verification thumbnail per hashed image (curation.dedup.verify)
sig_phash_win list<uint64>         pHashes of the six crop windows of a single-image row (crops as candidates)
sig_area   int64                   largest width*height among the media (ranking)
sig_nbytes int64                   encoded size of the media (ranking: less compressed wins)
sig_text   binary(16)              XXH3-128 of the normalized text
sig_minhash list<uint32>           one-permutation MinHash of the text's n-grams
sig_textlen int32                  length of the normalized text (ranking)
========== ======================= ===============================================

A row whose media fail to decode gets nulls for what could not be computed;
dropping undecodable media is the filters' job, not dedup's.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa

from curation.dedup import verify as V
from curation.dedup.config import DedupConfig
from curation.dedup.minhash import EMPTY, minhash_signatures, normalize_text
from curation.dedup.phash import (
    DECODE_SIDE, chroma_moments, color_thumb, frames_to_thumbs, phash_thumbs, thumbnail, window_thumbs,
)
from curation.operators import Operator
import media as M
from media import refs as R
from media.decoded import DecodedMedia, DecodeNeeds, SharedDecode, media_kind, row_positions, with_needs
from media.digests import digest, file_digest, pixel_digest  # noqa: F401 (re-exported)
from media.image import reduce_image
from media.thumbs import box_thumb
from PIL import Image

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
    "sig_vthumb": pa.list_(pa.binary()),
    "sig_phash_win": pa.list_(pa.uint64()),
    "sig_area": pa.int64(),
    "sig_nbytes": pa.int64(),
}
TEXT_COLUMNS: dict[str, pa.DataType] = {
    "sig_text": DIGEST,
    "sig_minhash": pa.list_(pa.uint32()),
    "sig_textlen": pa.int32(),
}
SIGNATURE_COLUMNS: dict[str, pa.DataType] = {**MEDIA_COLUMNS, **TEXT_COLUMNS}

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


def _nbytes(ref: Mapping[str, Any], got: DecodedMedia) -> int:
    """Encoded size of a source: from the shared read, else embedded bytes, else a stat."""
    if got.nbytes is not None:
        return got.nbytes
    if ref.get("bytes") is not None:
        return len(ref["bytes"])
    try:
        return os.path.getsize(R.ref_source(ref))
    except (OSError, M.MediaError, TypeError):
        return 0


class MediaSignatures(Operator):
    """Exact and perceptual hashes of a row's images, document pages and videos.

    Every hash reads the chain's shared decode (:mod:`media.decoded`): the byte
    hash hashes the bytes the decoder decoded, the pixel hash is the digest of
    the one full decode, pHash and colour moments use its RGB reduction, and the
    frame hashes use the video frames the video analyzer scored.
    """

    stage = "dedup"
    columns = MEDIA_COLUMNS

    def __init__(self, config: DedupConfig | None = None, shared: SharedDecode | None = None) -> None:
        self.config = config or DedupConfig()
        evals = bool(self.config.decontaminate)
        # decontamination needs pixel hashes and pHashes even where dedup of that kind is off
        self.want_pixels = self.config.exact_cfg.pixels or evals
        self.want_phash = self.config.image.enabled or evals
        self.want_video = self.config.video.enabled or self.want_pixels
        self.shared = with_needs(shared, self.needs())

    def needs(self) -> DecodeNeeds:
        """What these signatures read from each input (merged into the chain's shared decode)."""
        img = self.config.image
        thumbs = self.want_phash and (img.verify or (img.crops and img.enabled))
        return DecodeNeeds(
            byte_digest=self.config.exact_cfg.bytes, full_pixels=self.want_pixels,
            rgb_side=DECODE_SIDE if self.want_phash else None,
            verify_side=V.VERIFY_SIDE if thumbs else None,
            pages=self.config.image.max_items if self.want_phash else 0,
            page_side=DECODE_SIDE if self.want_phash else None,
            video_frames=(self.config.video.frames,) if self.want_video else (), video_side=DECODE_SIDE,
        )

    def __call__(self, table: pa.Table) -> pa.Table:
        media = table.column("media").to_pylist() if "media" in table.column_names else [None] * table.num_rows
        positions = row_positions(table)
        if table.num_rows and positions[0] is None:  # outside a chain: a private store, keyed by row
            self.shared.clear()
            positions = list(range(table.num_rows))
        cols: dict[str, list] = {name: [] for name in MEDIA_COLUMNS}
        thumbs: list[np.ndarray] = []
        colors: list[np.ndarray] = []
        owners: list[int] = []  # row of each image thumbnail
        self._verify = _VerifyThumbs(self.config.image.verify, self.config.image.crops and self.config.image.enabled)
        for row, items in enumerate(media):
            out = self._row(items or [], positions[row], thumbs, colors, owners, row)
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
            cols["sig_vthumb"], cols["sig_phash_win"] = self._verify.columns(owners, table.num_rows)
        for name, typ in MEDIA_COLUMNS.items():
            table = _set(table, name, pa.array(cols[name], type=typ))
        return table

    def _decoded(self, pos: int, index: int, ref: Mapping[str, Any]) -> DecodedMedia:
        # every page of a PDF row reads the one decode of its file (the row's first media entry)
        return self.shared.get(pos, 0 if media_kind(ref) == "pdf" else index, ref)

    def _row(self, items: list[Mapping[str, Any]], pos: int, thumbs: list, colors: list, owners: list,
             row: int) -> dict[str, Any]:
        cfg = self.config
        want_pixels, want_phash = self.want_pixels, self.want_phash
        out: dict[str, Any] = {}
        if not items:
            return out
        decoded = [self._decoded(pos, j, ref) for j, ref in enumerate(items)]
        # exact bytes: each distinct source once (pages of one PDF share a file)
        sources: dict[tuple[str, Any], tuple[Mapping[str, Any], DecodedMedia]] = {}
        for ref, got in zip(items, decoded):
            key = (("u", ref.get("uri")) if ref.get("bytes") is None and ref.get("uri")
                   else ("b", got.byte_digest if got.byte_digest is not None else id(got)))
            sources.setdefault(key, (ref, got))
        out["sig_nbytes"] = sum(_nbytes(ref, got) for ref, got in sources.values())
        if cfg.exact_cfg.bytes:
            parts = [got.byte_digest for _, got in sources.values()]
            # a clip is its file's bytes plus its span: the clips of one video are not byte duplicates of each other
            spans = [f"{ref['start_s']!r},{ref.get('end_s')!r}".encode() for ref, _ in sources.values()
                     if ref.get("start_s") is not None]
            out["sig_bytes"] = None if any(p is None for p in parts) else combine_digests(parts + spans)
        area = [int(ref["width"]) * int(ref["height"]) for ref in items if ref.get("width") and ref.get("height")]
        pixels: list[bytes] = []
        n_images = 0
        for ref, got in zip(items, decoded):
            kind = (ref.get("kind") or "image").lower()
            if got.error is not None:
                continue
            try:
                if kind == "video":
                    if not self.want_video:
                        continue
                    frames = got.video_frames(cfg.video.frames, DECODE_SIDE)
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
                    img = self._page(ref, got)
                    grey = img.convert("L")  # once, for the pHash and the verification thumbnails
                    thumbs.append(thumbnail(grey))
                    colors.append(color_thumb(img))
                    self._verify.add(box_thumb(grey, V.VERIFY_SIDE) if min(img.size) >= 2 else None, grey)
                    owners.append(row)
                    n_images += 1
                    continue
                if want_pixels and got.pixel_digest is not None:
                    pixels.append(got.pixel_digest)
                    if not area and got.info is not None:
                        area.append(got.info.width * got.info.height)
                if want_phash and n_images < cfg.image.max_items and got.hash_thumb is not None:
                    thumbs.append(got.hash_thumb)
                    colors.append(got.color_thumb)
                    # from the same reduction the pHash thumbnail came from (the shared decode made it)
                    vthumb = got.verify_thumb
                    if vthumb is None and got.rgb is not None and min(got.rgb.size) >= 2:
                        vthumb = box_thumb(got.rgb, V.VERIFY_SIDE)  # a decode made for other needs
                    self._verify.add(vthumb, got.rgb_grey if got.rgb_grey is not None else got.rgb)
                    owners.append(row)
                    n_images += 1
            except (M.MediaError, OSError, ValueError):
                continue
        if pixels:
            out["sig_pixels"] = pixels
        if area:
            out["sig_area"] = max(area)
        return out

    @staticmethod
    def _page(ref: Mapping[str, Any], got: DecodedMedia) -> Image.Image:
        """A document page at hashing size: the shared render of a PDF page, or a document image's RGB reduction."""
        if got.kind != "pdf":
            return reduce_image(got.rgb, DECODE_SIDE, "RGB")
        try:
            return reduce_image(got.page_image(int(ref.get("page") or 0)), DECODE_SIDE, "RGB")
        except KeyError:  # a page past the ones the chain rendered: render it now
            return R.decode_image_ref(ref, max_side=DECODE_SIDE)


class _VerifyThumbs(V.Collector):
    """:class:`curation.dedup.verify.Collector` fed with the shared decode's verification thumbnails.

    :meth:`add` takes each hashed image's 48-px grey thumbnail (``verify_thumb``,
    from the same reduction as its pHash; None for an image under 2 px).
    :meth:`columns` makes the crop-window thumbnails of the whole batch at
    once, resampled from the stacked thumbnails in two matrix products
    (:func:`curation.dedup.phash.window_thumbs`) instead of six crops and six
    resizes per image, and leaves the rest to the collector. An image smaller
    than the thumbnail (which would only upsample it) is cropped as before.
    """

    def __init__(self, verify: bool, crops: bool) -> None:
        super().__init__(verify, crops)
        self.bases: list[np.ndarray | None] = []
        self.small: dict[int, np.ndarray] = {}  # window thumbnails of images under VERIFY_SIDE, by position

    def add(self, vthumb: np.ndarray | None, img: Image.Image | None = None) -> None:  # type: ignore[override]
        """One hashed image: its verification thumbnail and the reduction it came from (grey or RGB)."""
        if self.crops and vthumb is not None and img is not None and min(img.size) < V.VERIFY_SIDE:
            self.small[len(self.thumbs)] = np.stack([thumbnail(w) for w in V.window_images(img)])
        self.thumbs.append(vthumb.tobytes() if vthumb is not None and self.verify else None)
        self.bases.append(vthumb if self.crops else None)
        self.windows.append(None)

    def columns(self, owners: list[int], n_rows: int) -> tuple[list, list]:
        have = [k for k, b in enumerate(self.bases) if b is not None]
        if have:
            stacks = window_thumbs(np.stack([self.bases[k] for k in have]), V.WINDOWS[1:])
            for k, stack in zip(have, stacks):
                self.windows[k] = self.small.get(k, stack)
        return super().columns(owners, n_rows)


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


def signature_operators(config: DedupConfig | Mapping[str, Any] | None = None,
                        shared: SharedDecode | None = None) -> list[Operator]:
    """The map-stage operators a recipe's ``dedup:`` section needs, in order (reading ``shared``, the chain's
    shared decode, when given)."""
    from curation.dedup.methods import methods

    cfg = config if isinstance(config, DedupConfig) else DedupConfig.model_validate(dict(config or {}))
    ops: list[Operator] = [MediaSignatures(cfg, shared), TextSignatures(cfg)]
    for m in methods():  # a method with columns of its own brings its operator
        op = m.operator(cfg, shared) if m.operator is not None else None
        if op is not None:
            ops.append(op)
    return ops


def signature_columns() -> dict[str, pa.DataType]:
    """Every column the signature operators may add (declare them in the manifest schema)."""
    from curation.dedup.methods import methods

    out = dict(SIGNATURE_COLUMNS)
    for m in methods():
        out.update(m.columns)
    return out


def compute_signatures(table: pa.Table, config: DedupConfig | None = None) -> pa.Table:
    """Apply both signature operators to a manifest-shaped table (no engine needed)."""
    for op in signature_operators(config):
        op.setup()
        table = op(table)
    return table
