"""The Ray engine: the job's stages as Ray Data ``map_batches`` stages, each with its own actor pool.

Chunk specs become a Ray Dataset with one block per chunk (a small job is
never cut into Ray's default 200 blocks; a large one streams). The first
stage reads a chunk and runs the fused CPU operators; each model operator
(``own_stage``) is a stage of its own whose actors hold its declared CPUs and,
when the cluster has them, a GPU; the last stage stages the chunk and sends
a small count record back to the driver. Between stages a chunk travels as one
record of Arrow IPC bytes (kept rows, ledger rows); Ray Data's streaming
executor bounds how many are in flight (backpressure on the object store), so
memory does not grow with the job. Every actor builds its stage's operators
once (``setup()`` per actor).
"""
from __future__ import annotations

import json
import warnings
from typing import Any, Callable

from curation.engine.stages import ChunkState, StageRunner, StageSpec
from curation.engine.staging import Staging
from curation.recipe import Recipe
from manifests.errors import ManifestError, RecipeError, UserError

#: key of a count record that carries a user error raised in a worker instead of counts
_USER_ERROR = "user_error"
_USER_ERRORS = {cls.__name__: cls for cls in (UserError, RecipeError, ManifestError)}


def recipe_json(recipe: Recipe) -> str:
    """The recipe as validated JSON: small, so actor arguments stay inline rather than in the object store."""
    return json.dumps(recipe.model_dump(mode="json", exclude={"base_dir"}))  # nulls kept: null disables a check


# --------------------------------------------------------------------------- staged pipeline


class _StageActor:
    """Runs one stage of the layout in a Ray actor; the job rides on the class (see ``_stage_class``)."""

    RECIPE_JSON = "{}"
    BASE_DIR: str | None = None
    OUT_DIR = ""
    INDEX = 0
    LAST = True

    def __init__(self) -> None:
        from curation.recipe import parse_recipe

        recipe = parse_recipe(json.loads(self.RECIPE_JSON), self.BASE_DIR, check_paths=False)
        self.runner = StageRunner(recipe, Staging(self.OUT_DIR, keep_local=False), self.INDEX, self.LAST)

    def _one(self, rec: dict[str, Any]) -> dict[str, Any]:
        if self.INDEX == 0:
            state = self.runner.start(int(rec["chunk"]), json.loads(str(rec["spec"])))
        else:
            state = ChunkState.from_record(rec)
        state = self.runner.run(state)
        if self.LAST:
            return {"counts": json.dumps(self.runner.finish(state))}
        return state.to_record()

    def __call__(self, batch):
        import pyarrow as pa

        out: list[dict[str, Any]] = []
        for rec in batch.to_pylist():
            if _USER_ERROR in json.loads(rec.get("counts") or "{}"):  # an earlier stage's user error travels on
                out.append(rec if not self.LAST else {"counts": rec["counts"]})
                continue
            try:
                out.append(self._one(rec))
            except UserError as exc:
                # Ray Data would wrap it in a UDF traceback; the driver re-raises it as the one-line error it is
                err = json.dumps({_USER_ERROR: str(exc), "class": type(exc).__name__})
                out.append({"counts": err} if self.LAST else
                           {"chunk": rec["chunk"], "spec": rec["spec"], "kept": b"", "ledger": b"", "counts": err})
        if self.LAST:
            return pa.table({"counts": pa.array([r["counts"] for r in out], pa.string())})
        return pa.table({
            "chunk": pa.array([int(r["chunk"]) for r in out], pa.int64()),
            "spec": pa.array([str(r["spec"]) for r in out], pa.string()),
            "kept": pa.array([r["kept"] for r in out], pa.large_binary()),
            "ledger": pa.array([r["ledger"] for r in out], pa.large_binary()),
            "counts": pa.array([r["counts"] for r in out], pa.string()),
        })


def _stage_class(recipe: Recipe, out_dir: str, stage: StageSpec, index: int, last: bool) -> type:
    """A subclass carrying the job and its stage in class attributes; Ray Data names the stage after it."""
    name = "Stage_" + "".join(ch if ch.isalnum() else "_" for ch in stage.name)
    return type(name, (_StageActor,), {
        "RECIPE_JSON": recipe_json(recipe), "BASE_DIR": recipe.base_dir, "OUT_DIR": str(out_dir),
        "INDEX": index, "LAST": last,
    })


def pool_plan(stages: list[StageSpec], workers: int, cluster_cpus: float, cluster_gpus: float) -> list[dict[str, Any]]:
    """Actors and per-actor Ray resources for each stage, fitting the cluster.

    Model stages get their declared pool and CPUs (scaled down when they would
    not leave half a CPU for the rest) and a GPU when the cluster has one and
    their device is ``auto`` or ``cuda``; the CPU stages share what is left,
    each with up to ``workers`` actors. Only Ray's
    accounting is scaled: an operator's thread count stays what it declared.
    """
    own = [s for s in stages if s.own]
    model_total = sum(s.num_cpus * (s.concurrency or 1) for s in own)
    scale = 1.0
    if model_total > max(0.5, cluster_cpus - 0.5):
        scale = max(0.5, cluster_cpus - 0.5) / model_total if cluster_cpus > 1 else 0.5 / model_total
    rest = max(0.5, cluster_cpus - model_total * scale)
    cpu_stages = [s for s in stages if not s.own]
    size = max(1, min(workers, int(rest)))
    per_actor = min(1.0, rest / (len(cpu_stages) * size)) if len(cpu_stages) > 1 else min(1.0, rest / size)
    plan = []
    for s in stages:
        if s.own:
            gpus = s.num_gpus
            if gpus == 0 and cluster_gpus > 0 and s.device in ("auto", "cuda"):
                gpus = 1.0
            plan.append({"stage": s.name, "pool": s.concurrency or 1, "num_cpus": round(s.num_cpus * scale, 3),
                         "num_gpus": gpus})
        else:
            plan.append({"stage": s.name, "pool": size, "num_cpus": round(per_actor, 3), "num_gpus": 0.0})
    return plan


class RayEngine:
    """Ray Data on an embedded local Ray, or on the cluster at ``--ray-address`` / ``RAY_ADDRESS``."""

    name = "ray"

    def __init__(self) -> None:
        self.workers = 1

    def start(self, address: str | None, workers: int | None) -> int:
        from curation.engine.ray_session import cluster_cpus, init_ray

        init_ray(address, None, quiet=True)
        self.workers = min(workers or cluster_cpus(), cluster_cpus())
        return self.workers

    def gpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("GPU", 0))

    def map_fn(self):
        from curation.dedup.parallel import ray_map

        return ray_map

    def run(self, recipe: Recipe, staging: Staging, stages: list[StageSpec],
            pending: list[tuple[int, dict]], on_done: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        import ray
        import ray.data

        from curation.engine.ray_session import _quiet_ray_data

        _quiet_ray_data(True)
        resources = ray.cluster_resources()
        plan = pool_plan(stages, self.workers, float(resources.get("CPU", 1)), float(resources.get("GPU", 0)))
        info: dict[str, Any] = {"stages": [s.as_dict() | p for s, p in zip(stages, plan)]}
        if not pending:
            return info
        out_dir = str(staging.out)  # a folder or an object-store URI: each actor stages to it
        items = [{"chunk": k, "spec": json.dumps(spec)} for k, spec in pending]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for j, (stage, p) in enumerate(zip(stages, plan)):
                kwargs: dict[str, Any] = dict(
                    batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
                    compute=ray.data.ActorPoolStrategy(size=max(1, min(p["pool"], len(items)))),
                    num_cpus=p["num_cpus"],
                )
                if p["num_gpus"]:
                    kwargs["num_gpus"] = p["num_gpus"]
                cls = _stage_class(recipe, out_dir, stage, j, j == len(stages) - 1)
                try:
                    # a crashed actor (a decoder segfault on a poisoned file) fails the job instead of
                    # retrying the same chunk forever; the rerun resumes from the staged chunks
                    ds = ds.map_batches(cls, max_restarts=0, **kwargs)
                except TypeError:  # a Ray without per-call remote args
                    ds = ds.map_batches(cls, **kwargs)
        pids: dict[str, set[int]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for record in batch.column("counts").to_pylist():
                counts = json.loads(record)
                if _USER_ERROR in counts:
                    raise _USER_ERRORS.get(counts["class"], UserError)(counts[_USER_ERROR])
                for j, st in (counts.get("stages") or {}).items():
                    pids.setdefault(stages[int(j)].name, set()).add(int(st["pid"]))
                on_done(counts)
        for s in info["stages"]:
            s["pids"] = sorted(pids.get(s["name"], ()))
        try:
            info["ray_stats"] = ds.stats()
        except Exception:  # pragma: no cover - stats are informative only
            info["ray_stats"] = ""
        return info
