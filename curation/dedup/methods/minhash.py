"""Near-duplicate text by MinHash: text rows and document text.

Signatures: ``sig_minhash`` (one-permutation MinHash, :mod:`curation.dedup.minhash`,
from the text signature operator). Candidates: LSH bands (``bands`` x ``rows``,
derived from the threshold by :func:`lsh_params`), a star per bucket. Verification:
exact Jaccard of the n-gram sets (or the signature estimate) in the ``text``
resolve phase, by the external join of :mod:`curation.dedup.textverify`.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.dedup.keys import key
from curation.dedup.layout import K_MINHASH
from curation.dedup.methods.base import DedupMethod, EdgeKind, RecordContext, ResolveContext, ResolvePhase
from curation.dedup.minhash import band_keys
from manifests.errors import UserError


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """Probability that two sets of Jaccard `similarity` share at least one LSH band."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_params(threshold: float, num_perm: int, *, favour_recall: bool = True) -> tuple[int, int]:
    """Bands and rows for a Jaccard threshold.

    With verification (``favour_recall``) false candidates cost only a check,
    while a missed pair is lost for good: take the most rows (fewest false
    candidates) that still make a pair *at* the threshold a candidate with
    probability >= 0.995. Without verification the signature estimate decides,
    so minimise the false-positive plus false-negative area around the
    threshold, as the usual S-curve optimisation does.
    """
    if not 0 < threshold <= 1:
        raise ValueError("threshold must be in (0, 1]")
    if favour_recall:
        best = (num_perm, 1)
        for r in range(1, num_perm + 1):
            b = num_perm // r
            if candidate_probability(threshold, b, r) >= 0.995:
                best = (b, r)
        return best
    grid = [i / 200 for i in range(201)]
    best_err, best = math.inf, (num_perm, 1)
    for r in range(1, num_perm + 1):
        b = num_perm // r
        fp = sum(candidate_probability(s, b, r) for s in grid if s < threshold) / 200
        fn = sum(1 - candidate_probability(s, b, r) for s in grid if s >= threshold) / 200
        if fp + fn < best_err:
            best_err, best = fp + fn, (b, r)
    return best


class TextConfig(BaseModel):
    """``dedup.text``: MinHash near duplicates for text rows and document text."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    threshold: float = Field(0.8, gt=0, le=1)  # Jaccard similarity of the n-gram sets
    num_perm: int = Field(128, ge=8, le=1024)
    ngram: int = Field(5, ge=1, le=32)
    unit: Literal["word", "char"] = "word"
    #: verify LSH candidates by exact Jaccard of the n-gram sets (else by the signature estimate)
    verify: bool = True
    seed: int = Field(1, ge=0)
    bands: int | None = Field(None, ge=1)
    rows: int | None = Field(None, ge=1)
    #: eval questions shorter than this many words are not used for text decontamination (too generic)
    min_words: int = Field(6, ge=1)

    @model_validator(mode="after")
    def _lsh(self) -> "TextConfig":
        if self.bands is None and self.rows is None:
            self.bands, self.rows = lsh_params(self.threshold, self.num_perm, favour_recall=self.verify)
        elif self.bands is None:
            self.bands = max(1, self.num_perm // self.rows)
        elif self.rows is None:
            self.rows = max(1, self.num_perm // self.bands)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


def _fingerprint(cfg: Any) -> list:
    t = cfg.text
    return [t.enabled, t.num_perm, t.ngram, t.unit, t.seed]


def _records(ctx: RecordContext) -> None:
    """One record per LSH band of every signature (text/document rows, and any row meeting eval questions)."""
    t, cfg = ctx.table, ctx.config.text
    if not ctx.has("sig_minhash"):
        return
    col = t.column("sig_minhash").combine_chunks()
    valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool) & ctx.text_ok
    dd = valid & ctx.is_text_mod & ctx.dedup_role & cfg.enabled
    rows = np.flatnonzero(dd | (valid & ctx.eval_role))
    if not rows.size:
        return
    sub = col.take(pa.array(rows))
    flat = np.asarray(sub.flatten().to_numpy(zero_copy_only=False), dtype=np.uint32)
    if flat.size != rows.size * cfg.num_perm:
        raise UserError(
            f"sig_minhash has {flat.size // max(rows.size, 1)} values per row, the recipe asks for "
            f"num_perm={cfg.num_perm}; recompute the signatures",
            field="dedup.text.num_perm",
        )
    keys = band_keys(flat.reshape(rows.size, cfg.num_perm), cfg.bands, cfg.rows)
    b = cfg.bands
    rep = np.repeat(rows, b)
    ctx.emit(K_MINHASH, key(K_MINHASH, keys.reshape(-1), np.tile(np.arange(b), rows.size)), rep, np.repeat(dd[rows], b))


def _verify(ctx: ResolveContext) -> pa.Table:
    from curation.dedup.textverify import verify_text

    return verify_text(ctx.cands, list(ctx.files), ctx.config, ctx.work, ctx.map_fn)


METHOD = DedupMethod(
    key="text",
    config=TextConfig,
    kinds={K_MINHASH: EdgeKind("minhash", "jaccard", "similarity", verify_later=lambda cfg: True)},
    fingerprint=_fingerprint,
    records=_records,
    resolve=ResolvePhase(marker="text", output="text-edges.parquet", run=_verify, candidate_kinds=(K_MINHASH,)),
    description="MinHash LSH, then exact Jaccard of the n-gram sets",
)
