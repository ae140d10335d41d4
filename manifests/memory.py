"""The Arrow memory pool smolcurate's processes allocate from.

pyarrow's Linux wheels default to mimalloc, which keeps the pages a long job frees: the curation driver's
resident memory then rises with the rows that have passed through it, not with what it holds. Measured on the
text dedup job of ``benchmarks/bench_scale.py`` at 1M rows (driver peak, the same job): mimalloc 893 MB, the
system allocator 837 MB (its arenas 375 MB free), jemalloc 702 MB, with the same 214-237 MB of live Arrow
buffers in each. So the driver and the workers use jemalloc unless the user chose a pool with
``ARROW_DEFAULT_MEMORY_POOL`` (Arrow's own variable, which then wins).
"""
from __future__ import annotations

import os

POOL_ENV = "ARROW_DEFAULT_MEMORY_POOL"


def use_jemalloc() -> str:
    """Make jemalloc the process's default Arrow pool (where pyarrow has it and the user chose none); the backend in use.

    Buffers allocated before keep their pool; only new allocations move, so calling it late or twice is harmless.
    """
    import pyarrow as pa

    if not os.environ.get(POOL_ENV):
        try:
            pool = pa.jemalloc_memory_pool()
        except (NotImplementedError, AttributeError):  # a pyarrow built without jemalloc keeps its default
            pool = None
        if pool is not None and pa.default_memory_pool().backend_name != pool.backend_name:
            pa.set_memory_pool(pool)
    return pa.default_memory_pool().backend_name
