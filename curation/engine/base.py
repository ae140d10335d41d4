"""The engine protocol: what a curation job needs from the thing that runs its chunks.

:func:`curation.engine.job.run_job` never asks which engine it has: it starts
the engine (which says how many workers it got and how many GPUs it sees, so
``device: cuda`` can be refused before any work), hands it the pending chunks
and the stage layout (:mod:`curation.engine.stages`), and takes its
``map_fn`` for the dedup partitions. An engine is one module plus one line in
:data:`curation.engine.registry.ENGINES`.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from curation.engine.stages import StageSpec
from curation.engine.staging import Staging
from curation.recipe import Recipe

#: ``map_fn(fn, items)``: run ``fn`` over ``items`` (in order), possibly in parallel
MapFn = Callable[[Callable[[int], Any], Sequence[int]], list[Any]]
OnDone = Callable[[dict[str, Any]], None]


class Engine(Protocol):
    name: str

    def start(self, address: str | None, workers: int | None) -> int:
        """Connect or start whatever runs the work; returns the number of CPU workers."""

    def gpus(self) -> int:
        """GPUs the workers can use (0 without any)."""

    def run(self, recipe: Recipe, staging: Staging, stages: list[StageSpec],
            pending: list[tuple[int, dict]], on_done: OnDone) -> dict[str, Any]:
        """Run every pending chunk through the stages and stage it; returns the run's stage stats."""

    def map_fn(self) -> MapFn | None:
        """How the global dedup phase maps its partitions (None: in-process, one after another)."""
