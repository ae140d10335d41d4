"""The contract of a model operator (enricher): config model, bad-input check, resources, device.

An enricher is one module holding an :class:`Enricher` subclass plus one line in
:data:`curation.enrich.registry.ENRICHERS`. The recipe section
``enrich.<name>`` is validated by the class's ``Config`` (a pydantic model);
``check()`` runs in the driver before any work starts (a missing model path,
a folder that is not a model, a head of the wrong size, ``device: cuda``
without a GPU: one-line :class:`~manifests.errors.RecipeError`); the engine
then builds one instance per worker with ``cls(cfg, recipe)`` and calls
``setup()`` once before the first batch.
"""
from __future__ import annotations

import os
import re
from typing import Any, ClassVar, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from curation.operators import Operator
from manifests.errors import RecipeError

Device = Literal["auto", "cpu", "cuda"]
#: how a Hugging Face hub id is spelled (looked up in the local HF cache only)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


class EnrichConfig(BaseModel):
    """Fields every enrich section accepts: where it runs and on which sources."""

    model_config = ConfigDict(extra="forbid")
    #: source names this operator runs on (default: every source of a kind it handles)
    sources: Optional[list[str]] = None
    #: auto takes a GPU when the worker has one; cuda fails before any work when none is visible
    device: Device = "auto"
    #: rows per forward pass
    batch_size: int = Field(32, ge=1, le=65536)
    #: workers in this operator's own pool on Ray (the local engine runs one)
    concurrency: int = Field(1, ge=1, le=1024)
    #: CPUs each worker holds (also its torch thread count, so scores do not depend on the engine)
    num_cpus: float = Field(1.0, gt=0, le=256)

    #: fields holding file or folder paths (resolved against the recipe's folder)
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    def path(self, recipe: Any, name: str) -> Optional[str]:
        """A path field made absolute against the recipe's folder; a hub id (``org/name``, not on disk) stays as written."""
        value = getattr(self, name)
        if value is None:
            return None
        full = recipe.resolve(value)
        if os.path.exists(full) or value.startswith((".", "/", "~")) or not _HUB_ID.match(value):
            return full
        return value

    def resolved(self, recipe: Any) -> dict[str, Any]:
        """The section as JSON with its paths absolute: what manifest.json records and the recipe hash covers."""
        data = self.model_dump(mode="json")
        for name in self.PATH_FIELDS:
            data[name] = self.path(recipe, name)
        return data


class Enricher(Operator):
    """Base class of model operators: one own stage (own actor pool on Ray) with declared resources."""

    #: validates the recipe section
    Config: ClassVar[type[EnrichConfig]] = EnrichConfig
    #: source kinds this operator handles
    kinds: ClassVar[tuple[str, ...]] = ()
    #: False for cheap operators that fuse into the neighbouring CPU stage (thresholds over scores)
    own_stage: ClassVar[bool] = True

    def __init__(self, cfg: EnrichConfig, recipe: Any) -> None:
        self.cfg = cfg
        self.recipe = recipe
        if self.own_stage:
            self.batch_size = cfg.batch_size
            self.concurrency = cfg.concurrency
            self.num_cpus = cfg.num_cpus
            self.num_gpus = 1.0 if cfg.device == "cuda" else 0.0

    @classmethod
    def check(cls, cfg: EnrichConfig, recipe: Any, field: str, gpus: Optional[int] = None) -> None:
        """Reject bad input before any work starts (override; call super for the device check).

        ``gpus``: GPUs the engine's workers can use (the Ray cluster's, or this machine's); None: unknown,
        so ``device: cuda`` is not checked.
        """
        if cfg.sources is not None:
            names = {s.name for s in recipe.sources}
            for j, name in enumerate(cfg.sources):
                if name not in names:
                    raise RecipeError(f"no source named {name!r}", field=f"{field}.sources[{j}]")
        if cfg.device == "cuda" and gpus is not None and gpus < 1:
            raise RecipeError("device is cuda but the engine sees no GPU (use auto or cpu)", field=f"{field}.device")

    @classmethod
    def thresholds(cls, cfg: EnrichConfig) -> list[dict[str, Any]]:
        """The thresholds the section sets, as ``{key, column, op, value}``: ``key`` is the ledger reason,
        ``op`` the keep condition. What manifest.json records and histograms draw."""
        return []

    def before(self, shared: Any) -> list[Operator]:
        """Operators the chain runs just before this one, in the CPU stage (e.g. cutting model inputs from
        the chain's shared decode ``shared``); none by default."""
        return []

    def applies(self, source: Any) -> bool:
        """Whether this operator runs on a source (by kind and the section's ``sources`` list)."""
        if source.kind not in self.kinds:
            return False
        return self.cfg.sources is None or source.name in self.cfg.sources
