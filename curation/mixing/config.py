"""The mixture file: a pydantic model so that a bad field is reported by name.

`MixtureConfig` is what `smolcurate mix MIXTURE.yaml` reads and what a curation
recipe embeds under `mixture:`. Rules and categories are data (predicates over
sample metadata), never code, so a mixture is fully described by its file and
can be hashed into the output's provenance.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from manifests.config import load_yaml_file, validation_error
from manifests.errors import RecipeError

#: tolerance on weights summing to one (YAML users write 0.41 + 0.14 + ...)
SUM_TOLERANCE = 1e-6

#: the largest repeat cap accepted (caps are stored as int16 per row)
MAX_EPOCHS = 10_000

#: per-row numbers a predicate can test; computed from metadata only
NUMERIC_FEATURES = (
    "media",  # number of media items
    "images",  # media items of kind image
    "pages",  # media items of kind page
    "videos",  # media items of kind video
    "duration",  # seconds of video in the sample (sum over media)
    "frames",  # video frames (sum over media)
    "width",  # widest media item, pixels
    "height",  # tallest media item, pixels
    "text_chars",  # characters of text plus all turns
    "turns",  # number of conversation turns
    "tokens",  # tokens under the mixture's strategy (needs `strategy`)
    "tokens_visual",
    "tokens_text",
)
TOKEN_FEATURES = ("tokens", "tokens_visual", "tokens_text")

Scalar = Union[str, int, float, bool]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """Bounds on one number; all given bounds must hold."""

    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    eq: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _number_means_eq(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"eq": value}
        return value

    @model_validator(mode="after")
    def _some_bound(self) -> "Range":
        if all(v is None for v in (self.lt, self.le, self.gt, self.ge, self.eq)):
            raise ValueError("give at least one of lt, le, gt, ge, eq")
        return self


class Match(_Strict):
    """A predicate over one sample's metadata: every key given must hold (AND)."""

    source: str | list[str] | None = None
    modality: str | list[str] | None = None
    category: str | list[str] | None = None
    meta: dict[str, Scalar | list[Scalar]] | None = None
    columns: dict[str, Range] | None = None  # numeric extension columns, e.g. score_blur
    media: Range | None = None
    images: Range | None = None
    pages: Range | None = None
    videos: Range | None = None
    duration: Range | None = None
    frames: Range | None = None
    width: Range | None = None
    height: Range | None = None
    text_chars: Range | None = None
    turns: Range | None = None
    tokens: Range | None = None
    tokens_visual: Range | None = None
    tokens_text: Range | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "Match":
        if not self.model_dump(exclude_none=True):
            raise ValueError("an empty match would select every row; use `all: true` for that")
        return self

    def features(self) -> set[str]:
        """The numeric features this predicate reads."""
        return {name for name in NUMERIC_FEATURES if getattr(self, name) is not None}


class Rule(_Strict):
    """Changes how matching rows are drawn, e.g. SmolVLM2's halving of short clips.

    weight scales a row's draw priority (0 leaves it out); keep puts rows first in
    every pass, so they are all in the mixture whenever their group's target can
    hold them ("keep this source at 100%"); max_epochs caps their repeat count.
    """

    name: str | None = None
    match: Match
    weight: float = Field(1.0, ge=0)
    keep: bool = False
    max_epochs: int | None = Field(None, ge=1, le=MAX_EPOCHS)


class InputSpec(_Strict):
    """One input manifest, optionally restricted to some of its sources."""

    path: str
    sources: list[str] | None = None


class MixtureConfig(_Strict):
    """A training mixture: which manifests, what shares, how many samples or tokens."""

    preset: str | None = None
    seed: int = 0
    by: Literal["samples", "tokens"] = "samples"
    strategy: str | dict[str, Any] | None = None  # tokenization preset name, or {name: preset, field: value}
    tokenizer: str | None = None  # tokenizer.json for exact text counts (default: the strategy's estimate)
    total: int | None = Field(None, gt=0)
    total_unit: Literal["samples", "tokens"] | None = None
    inputs: list[Union[str, InputSpec]] = Field(default_factory=list)
    weights: dict[str, float] | None = None
    modality_weights: dict[str, float] | None = None
    categories: dict[str, Match] | None = None
    rules: list[Rule] = Field(default_factory=list)
    keep: list[str] = Field(default_factory=list)
    max_epochs: int | dict[str, int] = 1
    allow_shortfall: bool = False
    shard_rows: int | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fields of a named preset, overridden by the fields given next to it."""
        if isinstance(data, dict) and data.get("preset"):
            from curation.mixing.presets import load_preset

            base = load_preset(str(data["preset"]))
            merged = {**base, **data}
            return merged
        return data

    @field_validator("weights", "modality_weights")
    @classmethod
    def _shares_valid(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("is empty")
        for name, share in value.items():
            if not isinstance(share, (int, float)) or not math.isfinite(share) or share < 0:
                raise ValueError(f"share of {name!r} must be a number >= 0, got {share!r}")
        total = sum(value.values())
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ValueError(f"shares sum to {total:.6g}, not 1")
        return value

    @field_validator("max_epochs")
    @classmethod
    def _epochs_valid(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        items = value.items() if isinstance(value, dict) else [("max_epochs", value)]
        for name, n in items:
            if not 1 <= n <= MAX_EPOCHS:
                raise ValueError(f"{name}: must be between 1 and {MAX_EPOCHS}, got {n}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "MixtureConfig":
        if self.weights is not None and self.modality_weights is not None:
            raise ValueError("give either weights (by source) or modality_weights (by modality/category), not both")
        if self.weights is None and self.modality_weights is None:
            raise ValueError("give weights (shares by source) or modality_weights (shares by modality/category)")
        if self.categories is not None:
            if self.modality_weights is None:
                raise ValueError("categories are only used with modality_weights")
            for name, match in self.categories.items():
                if match.category is not None:
                    raise ValueError(f"categories.{name}: a category cannot be defined by another category")
        if self.weights is not None and any(r.match.category is not None for r in self.rules):
            raise ValueError("rules match `category` only when shares are given by modality_weights")
        return self

    # -- derived ---------------------------------------------------------------
    @property
    def group_level(self) -> Literal["source", "modality", "category"]:
        """What the shares are keyed by."""
        if self.weights is not None:
            return "source"
        return "category" if self.categories is not None else "modality"

    @property
    def shares(self) -> dict[str, float]:
        return dict(self.weights if self.weights is not None else self.modality_weights or {})

    @property
    def unit_of_total(self) -> Literal["samples", "tokens"]:
        return self.total_unit or self.by

    def all_rules(self) -> list[Rule]:
        """`keep:` sources as rules first, then the explicit rules in file order."""
        kept = [Rule(name=f"keep {s}", match=Match(source=s), keep=True) for s in self.keep]
        return kept + list(self.rules)

    def matches(self) -> list[Match]:
        """Every predicate the scan evaluates: rules (`keep:` ones included), then categories."""
        return [r.match for r in self.all_rules()] + list((self.categories or {}).values())

    def needs_tokens(self) -> bool:
        """Whether any part of the mixture reads token counts."""
        if self.by == "tokens" or self.unit_of_total == "tokens":
            return True
        return any(m.features() & set(TOKEN_FEATURES) for m in self.matches())

    def input_specs(self) -> list[InputSpec]:
        return [InputSpec(path=i) if isinstance(i, str) else i for i in self.inputs]

    def epochs_for(self, source: str) -> int:
        if isinstance(self.max_epochs, int):
            return self.max_epochs
        return int(self.max_epochs.get(source, self.max_epochs.get("default", 1)))


def parse_mixture(data: Any, *, where: str = "mixture") -> MixtureConfig:
    """Validate a mapping into a MixtureConfig; the error names the first bad field in one line."""
    if isinstance(data, MixtureConfig):
        return data
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: expected a mapping of mixture fields, got {type(data).__name__}")
    try:
        return MixtureConfig.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, default_field="mixture") from None


def load_mixture(path: str | os.PathLike) -> MixtureConfig:
    """Read a mixture YAML (or JSON) file; relative input paths resolve against the file's folder."""
    p = Path(path)
    data = load_yaml_file(p, "mixture")
    if isinstance(data, dict) and isinstance(data.get("inputs"), list):
        data = dict(data)
        data["inputs"] = [_resolve_input(item, p.parent) for item in data["inputs"]]
    return parse_mixture(data, where=str(p))


def _resolve_input(item: Any, base: Path) -> Any:
    from manifests.storage import is_uri, local_path

    if isinstance(item, str) and is_uri(item) or isinstance(item, dict) and is_uri(str(item.get("path", ""))):
        return item  # a manifest on an object store (s3://...): no folder to resolve against

    def local(path: str) -> str:  # relative to the YAML's folder; file:///x is the local path /x
        p = local_path(path)
        return str(p) if p.is_absolute() else str((base / p).resolve())

    if isinstance(item, str):
        return local(item)
    if isinstance(item, dict) and isinstance(item.get("path"), str):
        return {**item, "path": local(item["path"])}
    return item
