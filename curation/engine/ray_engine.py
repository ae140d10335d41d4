"""The Ray engine: chunk specs become a Ray Dataset mapped by a pool of actors running the chunk runner.

Each actor builds its operator chains once (``setup()`` per actor), then
processes one chunk per batch and stages its result; only small count records
travel back to the driver. The dataset has one block per chunk, so a small
job is never cut into Ray's default 200 blocks and a large one streams.
"""
from __future__ import annotations

import json
import warnings
from typing import Any, Callable

import numpy as np

from curation.engine.chunk import ChunkRunner
from curation.engine.staging import Staging
from curation.recipe import Recipe
from manifests.errors import ManifestError, RecipeError, UserError

#: key of a count record that carries a user error raised in a worker instead of counts
_USER_ERROR = "user_error"
_USER_ERRORS = {cls.__name__: cls for cls in (UserError, RecipeError, ManifestError)}


class _ChunkActor:
    """Runs chunks in a Ray actor; the job's recipe and output rides on the class (see ``_actor_class``)."""

    RECIPE_JSON = "{}"
    BASE_DIR: str | None = None
    OUT_DIR = ""

    def __init__(self) -> None:
        from curation.recipe import parse_recipe

        recipe = parse_recipe(json.loads(self.RECIPE_JSON), self.BASE_DIR, check_paths=False)
        self.runner = ChunkRunner(recipe, Staging(self.OUT_DIR))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for k, spec in zip(batch["chunk"], batch["spec"]):
            try:
                rows.append(self.runner.run(int(k), json.loads(str(spec))))
            except UserError as exc:
                # Ray Data would wrap it in a UDF traceback; the driver re-raises it as the one-line error it is
                rows.append({_USER_ERROR: str(exc), "class": type(exc).__name__})
        return {"counts": np.array([json.dumps(r) for r in rows], dtype=object)}


def _actor_class(recipe: Recipe, out_dir: str) -> type:
    """A subclass carrying the job in class attributes: no constructor arguments go through the object store."""
    return type("ChunkActor", (_ChunkActor,), {
        "RECIPE_JSON": recipe_json(recipe), "BASE_DIR": recipe.base_dir, "OUT_DIR": str(out_dir),
    })


def recipe_json(recipe: Recipe) -> str:
    """The recipe as validated JSON: small, so actor arguments stay inline rather than in the object store."""
    return json.dumps(recipe.model_dump(mode="json", exclude={"base_dir"}))  # nulls kept: null disables a check


def run_ray(recipe: Recipe, out_dir: str, pending: list[tuple[int, dict]], workers: int,
            on_done: Callable[[dict[str, Any]], None]) -> None:
    import ray.data

    from curation.engine.ray_session import _quiet_ray_data

    _quiet_ray_data(True)
    if not pending:
        return
    items = [{"chunk": k, "spec": json.dumps(spec)} for k, spec in pending]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    kwargs: dict[str, Any] = dict(
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(items)))),
        num_cpus=1,
        zero_copy_batch=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # a crashed actor (a decoder segfault on a poisoned file) fails the job instead of
            # retrying the same chunk forever; the rerun resumes from the staged chunks
            ds = ds.map_batches(_actor_class(recipe, out_dir), max_restarts=0, **kwargs)
        except TypeError:  # a Ray without per-call remote args
            ds = ds.map_batches(_actor_class(recipe, out_dir), **kwargs)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for record in batch["counts"]:
            counts = json.loads(str(record))
            if _USER_ERROR in counts:
                raise _USER_ERRORS.get(counts["class"], UserError)(counts[_USER_ERROR])
            on_done(counts)
