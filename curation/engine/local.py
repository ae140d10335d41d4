"""The in-process engine: the job's stages run one after another on each chunk, in this process."""
from __future__ import annotations

from typing import Any, Callable

from curation.engine.stages import StageRunner, StageSpec
from curation.engine.staging import Staging
from curation.recipe import Recipe


class LocalEngine:
    """Runs exactly the stage calls the Ray engine runs (same batches, same operators), sequentially."""

    name = "local"

    def start(self, address: str | None, workers: int | None) -> int:
        return 1

    def gpus(self) -> int:
        from curation.enrich.device import cuda_available

        return 1 if cuda_available() else 0

    def run(self, recipe: Recipe, staging: Staging, stages: list[StageSpec],
            pending: list[tuple[int, dict]], on_done: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        runners = [StageRunner(recipe, staging, j, j == len(stages) - 1) for j in range(len(stages))]
        for k, spec in pending:
            state = runners[0].start(k, spec)
            for runner in runners:
                state = runner.run(state)
            on_done(runners[-1].finish(state))
        return {"stages": [s.as_dict() | {"pool": 1} for s in stages]}

    def map_fn(self):
        return None

