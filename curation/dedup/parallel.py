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
"""
from __future__ import annotations

from typing import Any, Callable, Sequence


def ray_map(fn: Callable[[int], Any], items: Sequence[int], num_cpus: float = 1) -> list[Any]:
    """Map `fn` over `items` as Ray tasks, in order (starts the local Ray session if none is running)."""
    import ray

    if not ray.is_initialized():
        from curation.engine.ray_session import init_ray

        init_ray()
    task = ray.remote(num_cpus=num_cpus)(fn)
    return ray.get([task.remote(i) for i in items])
