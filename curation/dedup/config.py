"""The `dedup:` recipe section and the `decontaminate:` list, as pydantic models.

The curation engine embeds :class:`DedupConfig` as the recipe's ``dedup:``
section. LSH bands and rows are *derived* from the Jaccard threshold and the
permutation count (see :func:`lsh_params`) so a recipe names only what a user
reasons about; they can still be pinned explicitly.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from curation.dedup.semantic import SemanticConfig
from manifests.fsutil import canonical_hash

_STRICT = ConfigDict(extra="forbid")


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


class ExactConfig(BaseModel):
    """Which exact hashes define an exact duplicate."""

    model_config = _STRICT
    bytes: bool = True  # identical files
    pixels: bool = True  # identical decoded pixels (lossless re-encodes, other containers); costs a full decode
    text: bool = True  # identical normalized text (text and document rows)


class ImageConfig(BaseModel):
    """Perceptual-hash near duplicates for images and document pages."""

    model_config = _STRICT
    enabled: bool = True
    max_distance: int = Field(6, ge=0, le=31)  # Hamming distance on the 64-bit pHash
    #: images whose low-frequency detail (RMS of the 8x8 DCT AC terms of the 32x32 thumbnail,
    #: grey levels) is below this are "flat": their pHash is noise, so they only match exactly
    min_detail: float = Field(4.0, ge=0)
    #: when the curation engine wrote ``score_low_info``, rows with a score at or above this are flat too
    low_info_threshold: float = Field(0.9, ge=0, le=1)
    #: pHash is grey-level only: two coloured images also need mean chroma (Cb, Cr) this close,
    #: unless one is a greyscale rendition (a grey copy of a photo is a duplicate)
    max_chroma_distance: float = Field(6.0, ge=0)
    max_items: int = Field(8, ge=1)  # images / pages hashed per sample
    match_text: bool = False  # also require identical normalized text (keep same image + other caption)
    #: LSH bands over the 64 hash bits; default max_distance + 1 (pigeonhole: no pair within the distance is missed)
    bands: int | None = Field(None, ge=1, le=64)
    #: confirm every pHash candidate on a 48x48 grey thumbnail before it becomes an edge (curation.dedup.verify)
    verify: bool = True
    #: also hash six crop windows of single-image rows, so crops of up to 10% become candidates
    crops: bool = True

    @model_validator(mode="after")
    def _bands(self) -> "ImageConfig":
        if self.bands is None:
            self.bands = min(64, self.max_distance + 1)
        return self


class TextConfig(BaseModel):
    """MinHash near duplicates for text rows and document text."""

    model_config = _STRICT
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


class VideoConfig(BaseModel):
    """Frame-sequence near duplicates for videos."""

    model_config = _STRICT
    enabled: bool = True
    max_distance: int = Field(8, ge=0, le=31)  # per aligned frame pHash distance
    frames: int = Field(8, ge=1, le=64)  # frames sampled evenly from first to last
    #: fraction of aligned (non-flat) frames that must fall within max_distance
    frame_fraction: float = Field(0.75, gt=0, le=1)
    #: align the sequences (start offsets, length scales 0.75-1: trimmed and retimed copies); false: frame k
    #: against frame k only
    align: bool = True
    bands: int | None = Field(None, ge=1, le=64)

    @model_validator(mode="after")
    def _bands(self) -> "VideoConfig":
        if self.bands is None:
            self.bands = min(64, self.max_distance + 1)
        return self


class EvalSetConfig(BaseModel):
    """One evaluation set to decontaminate against."""

    model_config = _STRICT
    path: str
    name: str | None = None  # ledger reason is contaminated:<name>; default the file or folder name
    image_column: str | None = None  # default: first of image, images, img, picture, decoded_image
    text_column: str | None = None  # default: first of question, query, problem, prompt, text, instruction
    split: str | None = None  # for a saved DatasetDict

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        p = Path(self.path.rstrip("/"))
        return p.stem if p.suffix in (".parquet", ".arrow", ".jsonl") else p.name


class DedupConfig(BaseModel):
    """The recipe's ``dedup:`` section (plus ``decontaminate:``, which the recipe keeps at top level)."""

    model_config = _STRICT
    exact: Union[bool, ExactConfig] = Field(True, validate_default=True)
    image: ImageConfig = Field(default_factory=ImageConfig)
    text: TextConfig = Field(default_factory=TextConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    #: SemDeDup over image embeddings (curation/dedup/semantic.py; needs enrich.embed)
    semantic: SemanticConfig = Field(default_factory=SemanticConfig)
    #: existing manifests or parquet files: new samples duplicating them are dropped, never them
    against: list[str] = []
    decontaminate: list[Union[str, EvalSetConfig]] = []
    #: hash partitions of the band buckets; only memory and speed depend on it, never the result
    partitions: int = Field(32, ge=1, le=4096)

    @field_validator("exact", mode="after")
    @classmethod
    def _exact(cls, v: Union[bool, ExactConfig]) -> ExactConfig:
        if isinstance(v, bool):
            return ExactConfig(bytes=v, pixels=v, text=v)
        return v

    @field_validator("decontaminate", mode="after")
    @classmethod
    def _evalsets(cls, v: list) -> list[EvalSetConfig]:
        out = [EvalSetConfig(path=x) if isinstance(x, str) else x for x in v]
        names = [e.label for e in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"evaluation set names must be unique (give `name:`): {dup}")
        return out

    @property
    def exact_cfg(self) -> ExactConfig:
        return self.exact if isinstance(self.exact, ExactConfig) else ExactConfig()

    @property
    def eval_sets(self) -> list[EvalSetConfig]:
        return [e if isinstance(e, EvalSetConfig) else EvalSetConfig(path=e) for e in self.decontaminate]

    def signature_fingerprint(self) -> str:
        """Identity of the signature columns: manifests with the same value can be matched without rehashing."""
        from curation.dedup import phash, verify  # the hash definitions' own constants

        e = self.exact_cfg
        key = {
            "v": 3,  # 3: XXH3-128 digests, pHash from the shared decode's reduction (media.decoded)
            "evals": bool(self.decontaminate),  # eval sets make the operators hash more
            "exact": [e.bytes, e.pixels, e.text],
            "image": [self.image.enabled, self.image.max_items, phash.DECODE_SIDE, phash.TIE_MARGIN,
                      self.image.verify and verify.VERIFY_SIDE, self.image.crops and list(verify.WINDOWS)],
            "text": [self.text.enabled, self.text.num_perm, self.text.ngram, self.text.unit, self.text.seed],
            "video": [self.video.enabled, self.video.frames],
        }
        return canonical_hash(key)[:16]
