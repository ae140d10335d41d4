"""Curation recipes: YAML validated into pydantic models before any work starts.

A bad recipe is reported as one line naming the field, e.g.
``sources[2].path: no files match 'data/docs/*.pdf'``, raised as
:class:`manifests.errors.RecipeError` (exit code 2 on the command line).
Relative paths resolve against the recipe file's folder.
"""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from manifests.config import load_yaml_file, validation_error
from manifests.errors import RecipeError
from manifests.fsutil import canonical_hash
from media import DEFAULT_MAX_PIXELS

Kind = Literal["images", "image_text", "document", "text", "video"]
KIND_MODALITY = {"images": "image", "image_text": "image_text", "document": "document", "text": "text", "video": "video"}

#: rows (or files) per chunk by kind: the unit of work, retry and resume; never depends on worker count
DEFAULT_CHUNK_SIZE = {"images": 64, "image_text": 128, "document": 8, "text": 512, "video": 4}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- filters


class ImageFilters(_Strict):
    """Thresholds on images (and on the images of image_text rows). ``null`` disables a check."""

    min_side: Optional[int] = Field(32, ge=1)  # pixels, shorter side
    max_side: Optional[int] = Field(None, ge=1)
    max_aspect_ratio: Optional[float] = Field(10.0, ge=1)  # longer / shorter side
    min_megapixels: Optional[float] = Field(None, ge=0)
    max_megapixels: Optional[float] = Field(None, gt=0)
    #: decompression-bomb guard, checked from the header before decoding (not a quality filter)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)
    #: score_low_info = 1 - min(1, grey std / 32): 1.0 for a constant image
    max_low_info: Optional[float] = Field(0.98, ge=0, le=1)
    #: score_sharpness = variance of the Laplacian of the grey analysis image (low = blurry)
    min_sharpness: Optional[float] = Field(None, ge=0)
    #: allowed PIL format names (JPEG, PNG, WEBP, GIF, BMP, TIFF, PPM, MPO, ...); null allows all
    formats: Optional[list[str]] = None
    #: longer side of the reduced decode the scores are computed on
    analysis_side: int = Field(128, ge=16, le=4096)

    @field_validator("formats")
    @classmethod
    def _upper(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return None if v is None else [f.upper() for f in v]


class TextFilters(_Strict):
    """Thresholds on text: lengths, symbol ratio and Gopher-style repetition."""

    min_chars: Optional[int] = Field(20, ge=0)
    max_chars: Optional[int] = Field(None, ge=1)
    min_words: Optional[int] = Field(None, ge=0)
    max_words: Optional[int] = Field(None, ge=1)
    #: characters that are neither alphanumeric nor whitespace, over all non-space characters
    max_non_alnum_ratio: Optional[float] = Field(0.5, ge=0, le=1)
    #: fraction of lines that repeat an earlier line of the same text
    max_dup_line_frac: Optional[float] = Field(0.3, ge=0, le=1)
    #: characters in repeated lines over all characters
    max_dup_line_char_frac: Optional[float] = Field(0.2, ge=0, le=1)
    #: most frequent word n-gram's character share, per n (Gopher: 2: 0.20, 3: 0.18, 4: 0.16)
    max_top_ngram_frac: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    #: share of characters inside repeated word n-grams, per n (Gopher: 5: 0.15 ... 10: 0.10)
    max_dup_ngram_frac: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    #: repetition checks only apply to texts with at least this many words (short texts repeat by chance)
    repetition_min_words: int = Field(50, ge=0)

    @field_validator("max_top_ngram_frac", "max_dup_ngram_frac")
    @classmethod
    def _ngrams(cls, v: dict[int, float]) -> dict[int, float]:
        for n, frac in v.items():
            if not 1 <= n <= 32:
                raise ValueError(f"n-gram size {n} must be in 1..32")
            if not 0 <= frac <= 1:
                raise ValueError(f"threshold {frac} for n={n} must be in [0, 1]")
        return dict(sorted(v.items()))


class CaptionFilters(TextFilters):
    """Text thresholds for image_text captions and turns: short texts are normal there."""

    min_chars: Optional[int] = Field(1, ge=0)
    max_chars: Optional[int] = Field(4000, ge=1)
    min_words: Optional[int] = Field(1, ge=0)
    max_words: Optional[int] = Field(None, ge=1)
    max_non_alnum_ratio: Optional[float] = Field(0.6, ge=0, le=1)
    #: images per row
    min_images: int = Field(1, ge=0)
    max_images: Optional[int] = Field(None, ge=1)


class DocumentFilters(_Strict):
    """Thresholds on documents (PDFs and document images)."""

    min_pages: int = Field(1, ge=0)
    max_pages: Optional[int] = Field(2000, ge=1)
    #: mean characters of text layer per page (0 for scans without OCR)
    min_text_chars_per_page: Optional[float] = Field(None, ge=0)
    #: page sides in PDF points (1/72 inch)
    min_page_side_pt: Optional[float] = Field(36.0, ge=0)
    max_page_side_pt: Optional[float] = Field(14400.0, gt=0)
    #: render pages to prove they draw: none, the first page, or all pages (at a thumbnail size)
    render_check: Literal["none", "first", "all"] = "first"
    #: blank-page guard on the rendered first page (same score as images); null disables
    max_low_info: Optional[float] = Field(None, ge=0, le=1)
    #: cap on the pixels of a page rendered at the source dpi (huge pages get a lower effective dpi)
    max_page_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1)


class VideoFilters(_Strict):
    """Thresholds on videos."""

    min_duration_s: Optional[float] = Field(0.0, ge=0)
    max_duration_s: Optional[float] = Field(None, gt=0)
    min_fps: Optional[float] = Field(1.0, ge=0)
    max_fps: Optional[float] = Field(240.0, gt=0)
    min_side: Optional[int] = Field(32, ge=1)
    max_side: Optional[int] = Field(None, ge=1)
    #: score_motion = median over consecutive sampled frames of their mean absolute grey difference (0-255)
    min_motion: Optional[float] = Field(None, ge=0)
    #: score_static = fraction of consecutive sampled frame pairs under 1 grey level apart (slideshows, stills)
    max_static: Optional[float] = Field(None, ge=0, le=1)
    #: score_low_info = 1 - min(1, grey std / 32) of the sampled frame with most contrast (black or flat clips: 1)
    max_low_info: Optional[float] = Field(None, ge=0, le=1)
    #: frames sampled evenly from first to last for decodability and motion
    sample_frames: int = Field(8, ge=2, le=64)
    analysis_side: int = Field(128, ge=16, le=1024)
    #: decode every frame (slow) instead of the sampled ones to prove decodability
    full_decode: bool = False


class Filters(_Strict):
    image: ImageFilters = Field(default_factory=ImageFilters)
    text: TextFilters = Field(default_factory=TextFilters)
    image_text: CaptionFilters = Field(default_factory=CaptionFilters)
    document: DocumentFilters = Field(default_factory=DocumentFilters)
    video: VideoFilters = Field(default_factory=VideoFilters)


# --------------------------------------------------------------------------- sources

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Source(_Strict):
    """One recipe entry: a named source of one kind."""

    name: str
    kind: Kind
    #: glob(s), directories or files; relative to the recipe's folder
    path: Union[str, list[str], None] = None
    #: a Hugging Face hub id (or a local dataset folder) loaded with datasets.load_dataset; needs network for hub ids
    hub: Optional[str] = None
    hub_config: Optional[str] = None
    split: Optional[str] = None
    #: a reader in curation.readers.registry (files, jsonl, parquet, hf, cauldron, llava, webdataset, obelics);
    #: auto detects it from suffixes, tar members and table schemas
    format: str = "auto"
    text_column: Optional[str] = None
    image_column: Optional[str] = None
    turns_column: Optional[str] = None
    #: a column holding a stable per-row key; otherwise a content hash keys the row
    id_column: Optional[str] = None
    #: folder that relative image paths in a table resolve against (default: the table's folder)
    image_root: Optional[str] = None
    #: folder that relative video paths resolve against (llava; default: the table's folder)
    video_root: Optional[str] = None
    #: file suffixes to take from folders (default by kind)
    extensions: Optional[list[str]] = None
    recursive: bool = True
    #: documents: render resolution recorded for pages
    dpi: float = Field(100.0, gt=0, le=1200)
    chunk_size: Optional[int] = Field(None, ge=1, le=1_000_000)
    #: read at most this many inputs (files or rows), in enumeration order
    limit: Optional[int] = Field(None, ge=1)
    #: videos: cut each video into clip rows (curation.clips.config.ClipConfig; docs/documents-video.md)
    clips: Optional[Any] = None

    @field_validator("clips", mode="before")
    @classmethod
    def _clips(cls, v: Any) -> Any:
        if v is None or v is False:
            return None
        from curation.clips.config import ClipConfig

        return ClipConfig.model_validate({} if v is True else v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a valid source name (letters, digits, _ . -)")
        return v

    @field_validator("format")
    @classmethod
    def _format(cls, v: str) -> str:
        from curation.readers.registry import format_names

        if v not in format_names():
            raise ValueError(f"unknown format {v!r} (known: {', '.join(format_names())})")
        return v

    @field_validator("extensions")
    @classmethod
    def _ext(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        return None if v is None else [e.lower() if e.startswith(".") else "." + e.lower() for e in v]

    @model_validator(mode="after")
    def _where(self) -> "Source":
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of path or hub")
        if self.hub is not None and self.kind not in ("image_text", "text"):
            raise ValueError(f"hub sources are tables: kind must be image_text or text, not {self.kind}")
        if self.clips is not None and self.kind != "video":
            raise ValueError(f"clips: only video sources are cut into clips, not {self.kind}")
        return self

    @property
    def paths(self) -> list[str]:
        if self.path is None:
            return []
        return [self.path] if isinstance(self.path, str) else list(self.path)

    @property
    def modality(self) -> str:
        return KIND_MODALITY[self.kind]

    @property
    def chunk(self) -> int:
        return self.chunk_size or DEFAULT_CHUNK_SIZE[self.kind]


class TokensSection(_Strict):
    """Token counting by the tokenization package (optional): adds tokens_visual, tokens_text, tokens."""

    #: a tokenization preset (smolvlm-256m, smolvlm-500m, smolvlm-2.2b, idefics3)
    strategy: str = "smolvlm-256m"
    #: tokenizer.json, a folder holding one, or a hub id (network); text counts are estimated without one
    tokenizer: Optional[str] = None
    #: strategy fields to override (e.g. {longest_edge: 1536})
    overrides: dict[str, Any] = {}

    @field_validator("strategy")
    @classmethod
    def _known(cls, v: str) -> str:
        from tokenization.strategy import preset_names

        if v not in preset_names():
            raise ValueError(f"unknown strategy {v!r} (known: {', '.join(preset_names())})")
        return v


class DecodeSection(_Strict):
    """The shared decode of each chunk (docs/media.md)."""

    #: decode threads per worker; null: the CPUs the worker may use (on Ray its assigned CPUs), never more
    threads: Optional[int] = Field(None, ge=1, le=64)


class OutputSection(_Strict):
    #: rows per data shard (and per ledger shard)
    shard_rows: int = Field(50_000, ge=1)
    #: embed encoded image bytes in the manifest instead of referencing paths
    embed_images: bool = False


class Recipe(_Strict):
    """A curation recipe (see docs/curation.md for every field)."""

    seed: int = 0
    sources: list[Source] = Field(min_length=1)
    filters: Filters = Field(default_factory=Filters)
    dedup: Optional[Any] = None  # curation.dedup.DedupConfig, validated in _sections
    decontaminate: list[Any] = []  # evaluation sets (paths or curation.dedup EvalSetConfig mappings)
    mixture: Optional[Any] = None  # curation.mixing.config.MixtureConfig, validated in _sections
    tokens: Optional[TokensSection] = None
    document: Optional[Any] = None  # curation.enrich.ocr.DocumentSection (OCR of scans), validated in _document
    #: model operators by section name (curation.enrich.registry.ENRICHERS), validated in _enrich
    enrich: dict[str, Any] = {}
    output: OutputSection = Field(default_factory=OutputSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)
    #: folder relative paths resolve against (set by load_recipe; not part of the YAML)
    base_dir: Optional[str] = Field(None, exclude=True)

    @field_validator("sources")
    @classmethod
    def _unique(cls, v: list[Source]) -> list[Source]:
        seen: set[str] = set()
        for i, s in enumerate(v):
            if s.name in seen:
                raise ValueError(f"sources[{i}].name: duplicate source name {s.name!r}")
            seen.add(s.name)
        return v

    @field_validator("dedup", mode="before")
    @classmethod
    def _dedup(cls, v: Any) -> Any:
        if v is None or v is False:
            return None
        from curation.dedup.config import DedupConfig

        if v is True:
            return DedupConfig()
        return DedupConfig.model_validate(v)

    @field_validator("decontaminate", mode="before")
    @classmethod
    def _evals(cls, v: Any) -> Any:
        if not v:
            return []
        from curation.dedup.config import DedupConfig

        return list(DedupConfig.model_validate({"decontaminate": v}).decontaminate)

    @field_validator("enrich", mode="before")
    @classmethod
    def _enrich(cls, v: Any) -> Any:
        if not v:
            return {}
        if not isinstance(v, dict):
            raise ValueError("enrich is a mapping of model operator sections")
        from curation.enrich.registry import ENRICHERS, enricher_class

        out = {}
        for name in ENRICHERS:  # registry order is the chain order
            if name in v:
                try:
                    out[name] = enricher_class(name).Config.model_validate(v[name] if v[name] is not None else {})
                except ValidationError as exc:  # a dict's values lose their key in pydantic's error path
                    err = validation_error(exc)
                    msg = str(err)[len(err.field) + 2:] if err.field else str(err)
                    raise RecipeError(msg, field=f"enrich.{name}" + (f".{err.field}" if err.field else "")) from None
        unknown = sorted(set(v) - set(out))
        if unknown:
            raise ValueError(f"unknown model operator {unknown[0]!r} (known: {', '.join(ENRICHERS)})")
        return out

    @field_validator("document", mode="before")
    @classmethod
    def _document(cls, v: Any) -> Any:
        if v is None:
            return None
        from curation.enrich.ocr import DocumentSection

        return DocumentSection.model_validate(v)

    @field_validator("mixture", mode="before")
    @classmethod
    def _mixture(cls, v: Any) -> Any:
        if v is None:
            return None
        try:
            from curation.mixing.config import MixtureConfig
        except ImportError:  # mixing not installed in this tree: keep the raw mapping
            return v
        return MixtureConfig.model_validate(v)

    # -- derived -----------------------------------------------------------
    def resolve(self, path: str) -> str:
        """A recipe path made absolute against the recipe's folder (``~`` expanded); a URI (s3://...) as given."""
        from manifests.storage import is_uri

        if is_uri(path):
            return path
        p = os.path.expanduser(path)
        if not os.path.isabs(p) and self.base_dir:
            p = os.path.join(self.base_dir, p)
        return os.path.normpath(p)

    def tokenizer_spec(self) -> str | None:
        """``tokens.tokenizer`` as the loader takes it: a local file or folder made absolute, a hub id as given."""
        tok = self.tokens.tokenizer if self.tokens is not None else None
        return self.resolve(tok) if tok is not None and _is_local_spec(tok) else tok

    def dedup_config(self):
        """The dedup config with the top-level decontaminate list merged in and paths resolved; None when unset."""
        if self.dedup is None and not self.decontaminate:
            return None
        from curation.dedup.config import DedupConfig

        data = (self.dedup if self.dedup is not None else _decontaminate_only()).model_dump()
        evals = list(data.get("decontaminate") or []) + [e.model_dump() if hasattr(e, "model_dump") else e
                                                         for e in self.decontaminate]
        data["against"] = [self.resolve(a) for a in data.get("against") or []]
        data["decontaminate"] = [self.resolve(e) if isinstance(e, str) else {**e, "path": self.resolve(e["path"])}
                                 for e in evals]
        return DedupConfig.model_validate(data)

    def resolved(self) -> dict:
        """The recipe as JSON with absolute paths: what manifest.json records and hashes."""
        data = self.model_dump(mode="json", exclude={"base_dir"}, exclude_none=False)
        for s, src in zip(data["sources"], self.sources):
            if src.path is not None:
                s["path"] = [self.resolve(p) for p in src.paths] if isinstance(src.path, list) else self.resolve(src.path)
            for root in ("image_root", "video_root"):
                if getattr(src, root) is not None:
                    s[root] = self.resolve(getattr(src, root))
        dd = self.dedup_config()
        data["dedup"] = dd.model_dump(mode="json") if dd is not None else None
        for name, cfg in self.enrich.items():  # model and head paths made absolute, as source paths are
            data["enrich"][name] = cfg.resolved(self) if hasattr(cfg, "resolved") else data["enrich"][name]
        data.pop("decontaminate", None)
        return data

    def fingerprint(self) -> str:
        return canonical_hash(self.resolved())


def _is_local_spec(spec: str) -> bool:
    """A tokenizer spelled as a path (``./x``, ``/x``, ``~/x`` or ``*.json``) rather than a hub id."""
    return spec.startswith((".", "/", "~")) or spec.endswith(".json")


def _decontaminate_only():
    """A dedup config that finds no duplicates, only contamination."""
    from curation.dedup.config import DedupConfig

    return DedupConfig.model_validate(
        {"exact": False, "image": {"enabled": False}, "text": {"enabled": False}, "video": {"enabled": False}}
    )


# --------------------------------------------------------------------------- loading


def parse_recipe(data: Any, base_dir: str | os.PathLike | None = None, *, check_paths: bool = True) -> Recipe:
    """Validate a recipe mapping; paths resolve against ``base_dir``."""
    if not isinstance(data, dict):
        raise RecipeError("a recipe is a YAML mapping with at least `sources:`")
    try:
        recipe = Recipe.model_validate({**data, "base_dir": os.fspath(base_dir) if base_dir else None})
    except ValidationError as exc:
        raise validation_error(exc) from None
    if check_paths:
        check_recipe_paths(recipe)
    return recipe


def load_recipe(path: str | os.PathLike, *, check_paths: bool = True) -> Recipe:
    """Read, validate and check a recipe file; RecipeError with one line on any problem."""
    p = Path(path)
    data = load_yaml_file(p, "recipe")
    return parse_recipe(data, p.resolve().parent, check_paths=check_paths)


_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``shard-{000000..000009}.tar`` -> the ten names (zero padding kept); other patterns unchanged."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    a, b = m.group(1), m.group(2)
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [e for i in range(int(a), int(b) + 1) for e in expand_braces(head + str(i).zfill(len(a)) + tail)]


def check_recipe_paths(recipe: Recipe) -> None:
    """Every path must exist or every glob must match something, before any work starts."""
    for i, src in enumerate(recipe.sources):
        for j, raw in enumerate(src.paths):
            field = f"sources[{i}].path" + (f"[{j}]" if isinstance(src.path, list) else "")
            full = recipe.resolve(raw)
            expanded = expand_braces(full)
            from manifests import storage

            if storage.is_uri(full):  # an object store: the bucket, the credentials and the objects, checked now
                if expanded != [full]:
                    absent = next((e for e in expanded if storage.info(e) is None), None)
                    if absent is not None:
                        raise RecipeError(f"{raw!r}: {absent.rsplit('/', 1)[-1]} does not exist", field=field)
                elif glob.has_magic(full):
                    if not storage.glob(full):
                        raise RecipeError(f"no objects match {raw!r}", field=field)
                elif not storage.exists(full):
                    raise RecipeError(f"{raw!r} does not exist", field=field)
                continue
            if expanded != [full]:  # a shard range: every shard must exist
                absent = next((e for e in expanded if not os.path.lexists(e)), None)
                if absent is not None:
                    raise RecipeError(f"{raw!r}: {os.path.basename(absent)} does not exist", field=field)
            elif glob.has_magic(full):
                if not any(True for _ in glob.iglob(full, recursive=True)):
                    raise RecipeError(f"no files match {raw!r}", field=field)
            elif not os.path.lexists(full):
                raise RecipeError(f"{raw!r} does not exist", field=field)
        for root in ("image_root", "video_root"):
            value = getattr(src, root)
            if value is not None and not os.path.isdir(recipe.resolve(value)):
                raise RecipeError(f"{value!r} is not a folder", field=f"sources[{i}].{root}")
    dd = recipe.dedup_config()
    if dd is not None:
        for j, a in enumerate(dd.against):
            from manifests import storage

            if storage.is_uri(a):  # a manifest on an object store (read through its local mirror)
                if not storage.exists(storage.join(a, "manifest.json")):
                    raise RecipeError(f"{a!r} is not a manifest (no manifest.json)", field=f"dedup.against[{j}]")
                continue
            if not os.path.exists(a):
                raise RecipeError(f"{a!r} does not exist", field=f"dedup.against[{j}]")
        for j, e in enumerate(dd.decontaminate):
            path = e.path if hasattr(e, "path") else e
            from manifests import storage

            if storage.is_uri(path):  # an evaluation set on an object store: an object or a prefix
                if not storage.exists(path):
                    raise RecipeError(f"{path!r} does not exist", field=f"decontaminate[{j}]")
                continue
            if not os.path.exists(path):
                raise RecipeError(f"{path!r} does not exist", field=f"decontaminate[{j}]")
    tok = recipe.tokens.tokenizer if recipe.tokens is not None else None
    if tok is not None and _is_local_spec(tok) and not os.path.exists(recipe.tokenizer_spec()):
        raise RecipeError(f"{tok!r} does not exist", field="tokens.tokenizer")
