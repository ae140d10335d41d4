"""The in-process engine: the same chunk runner, one chunk after another."""
from __future__ import annotations

from typing import Any, Callable

from curation.engine.chunk import ChunkRunner
from curation.engine.staging import Staging
from curation.recipe import Recipe


def run_local(recipe: Recipe, staging: Staging, pending: list[tuple[int, dict]],
              on_done: Callable[[dict[str, Any]], None]) -> None:
    runner = ChunkRunner(recipe, staging)
    for k, spec in pending:
        on_done(runner.run(k, spec))
