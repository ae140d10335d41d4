"""Hand freed memory back to the OS between the phases of a long job.

Why: a job's driver runs phases one after another (dedup scatter, verification, components, the
shards' writing), each freeing what it held before the next starts. The allocators keep much of
it: glibc's heap (numpy arrays, Parquet metadata; its mmap threshold rises after large frees, so
later arrays come from the heap and fragment it) and Arrow's mimalloc pool. The resident size then
only ever rises, by a phase's peak at a time, though no phase holds more than its own share.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

import pyarrow as pa

__all__ = ["release_unused"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_unused() -> None:
    """Return the free memory of Arrow's pool and of the C heap to the OS (a few ms; call between phases)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
