"""Exact duplicates: identical files, identical decoded pixels, identical normalized text.

Signatures: ``sig_bytes``, ``sig_pixels``, ``sig_text`` (written by the shared
media and text signature operators of :mod:`curation.dedup.signatures` from the
one shared decode). Candidates: one bucket per digest; a bucket is a star of
edges, so no verification phase (a digest collision is the only false match).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, model_validator

from curation.dedup.keys import digest_keys, first8, key, list_keys
from curation.dedup.layout import K_BYTES, K_PIXEL_ITEM, K_PIXELS, K_TEXT
from curation.dedup.methods.base import DedupMethod, EdgeKind, RecordContext


class ExactConfig(BaseModel):
    """``dedup.exact``: which exact hashes define an exact duplicate (``true``/``false`` sets all three)."""

    model_config = ConfigDict(extra="forbid")
    bytes: bool = True  # identical files
    pixels: bool = True  # identical decoded pixels (lossless re-encodes, other containers); costs a full decode
    text: bool = True  # identical normalized text (text and document rows)

    @model_validator(mode="before")
    @classmethod
    def _all(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return {"bytes": v, "pixels": v, "text": v}
        return v


def _fingerprint(cfg: Any) -> list[bool]:
    e = cfg.exact
    return [e.bytes, e.pixels, e.text]


def _records(ctx: RecordContext) -> None:
    """Digest buckets: bytes and pixels between dedup rows, text among text/document rows and eval questions."""
    t, exact, emit = ctx.table, ctx.config.exact, ctx.emit
    salt = ctx.media_salt
    if ctx.dedup_role:
        if exact.bytes and ctx.has("sig_bytes"):
            k, v = digest_keys(t.column("sig_bytes"))
            rows = np.flatnonzero(v)
            emit(K_BYTES, key(K_BYTES, k[rows], salt[rows]), rows, True)
        if exact.pixels and ctx.has("sig_pixels"):
            k, v = list_keys(t.column("sig_pixels"))
            rows = np.flatnonzero(v)
            emit(K_PIXELS, key(K_PIXELS, k[rows], salt[rows]), rows, True)
    if ctx.has("sig_text"):
        dd = ctx.text_ok & ctx.is_text_mod & ctx.dedup_role & exact.text
        rows = np.flatnonzero(dd | (ctx.text_ok & ctx.eval_role))
        emit(K_TEXT, key(K_TEXT, ctx.textkey[rows]), rows, dd[rows])
    if ctx.eval_role and ctx.has("sig_pixels"):
        # image by image: any image of a training row may be an evaluation image
        px = t.column("sig_pixels").combine_chunks()
        rows = np.asarray(pc.list_parent_indices(px).to_numpy(zero_copy_only=False), dtype=np.int64)
        if rows.size:
            emit(K_PIXEL_ITEM, key(K_PIXEL_ITEM, first8(pc.list_flatten(px))), rows, False)


METHOD = DedupMethod(
    key="exact",
    config=ExactConfig,
    kinds={
        K_BYTES: EdgeKind("bytes", exact=True),
        K_PIXELS: EdgeKind("pixels", exact=True),
        K_TEXT: EdgeKind("text", exact=True),
        K_PIXEL_ITEM: EdgeKind("pixels", exact=True),  # one image of a training row against an evaluation image
    },
    fingerprint=_fingerprint,
    records=_records,
    description="identical bytes, decoded pixels or normalized text",
)
