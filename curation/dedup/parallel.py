"""Running the per-partition resolve work on Ray.

:func:`resolve_duplicates` takes a ``map_fn(fn, items)``; the Ray engine's
``map_fn()`` (:class:`curation.engine.ray_engine.RayEngine`) is :func:`ray_map`,
which runs each hash partition (and each semantic-dedup cluster partition) as a
Ray task; the local engine passes none (in-process, in order). Partitions live in files of the
resolve stage's shared area (:mod:`curation.dedup.shared`), so a task ships only
its partition number and the closure: the work directory on a local output, the
job's object store (``--out s3://...``) otherwise, so the nodes of a cluster
need no shared filesystem. The result is identical to the serial run (each
partition's output is a pure function of its file).

Worker failure: a task whose worker process or node dies is retried by Ray, at
most ``max_retries`` times (by default the pipeline's bound on a chunk's task
retries, :data:`curation.engine.ray_engine.TASK_RETRIES`); an exception the task
raises is never retried. When the retries run out the job ends with one line
(:class:`~curation.engine.ray_engine.WorkerFailureError`): the chunks stay staged
and the hash partitions already finished are marked, so the rerun does not redo them.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence


def ray_map(fn: Callable[[int], Any], items: Sequence[int], num_cpus: float = 1,
            max_retries: int | None = None) -> list[Any]:
    """Map `fn` over `items` as Ray tasks, in order (starts the local Ray session if none is running).

    ``max_retries``: retries of one task after its worker dies (None: ``ray_engine.TASK_RETRIES``), so a
    partition that kills every worker it runs on cannot loop.
    """
    import ray

    from curation.engine.ray_engine import TASK_RETRIES, WorkerFailureError, _first_line, worker_failure
    from curation.engine.ray_session import worker_runtime_env

    if not ray.is_initialized():
        from curation.engine.ray_session import init_ray

        init_ray()
    retries = TASK_RETRIES if max_retries is None else max_retries
    options: dict[str, Any] = dict(num_cpus=num_cpus, max_retries=retries, retry_exceptions=False)
    env = worker_runtime_env()  # the test-only fault hooks, as the pipeline's actors get them
    if env:
        options["runtime_env"] = env
    task = ray.remote(fn).options(**options)
    refs = [task.remote(i) for i in items]
    try:
        return ray.get(refs)
    except Exception as exc:  # noqa: BLE001 - only worker deaths are reworded; the rest re-raise as they are
        if not worker_failure(exc):
            raise
        raise WorkerFailureError(
            f"dedup resolve: a Ray task's worker died {retries + 1} times ({_first_line(exc)}); the staged chunks "
            "and the hash partitions already finished are kept: rerun the same command to resume") from None
