"""The dedup methods, one line each: recipe key -> ``module.path`` holding ``METHOD``.

The order is the order of the ``dedup:`` fields (and of the resolve phases).
Adding a method is one module plus one line here: see docs/dedup.md, *Adding a method*.
"""
from __future__ import annotations

import importlib
from functools import lru_cache

from curation.dedup.methods.base import DedupMethod, EdgeKind

METHODS: dict[str, str] = {
    "exact": "curation.dedup.methods.exact",
    "image": "curation.dedup.methods.phash",
    "text": "curation.dedup.methods.minhash",
    "video": "curation.dedup.methods.video",
    "semantic": "curation.dedup.methods.semantic",
}


@lru_cache(maxsize=None)
def methods() -> tuple[DedupMethod, ...]:
    """Every registered method, in registry order; each module's ``METHOD`` must carry its registry key."""
    out = []
    for key, module in METHODS.items():
        m = importlib.import_module(module).METHOD
        if m.key != key:
            raise RuntimeError(f"{module}.METHOD.key is {m.key!r}, registered as {key!r}")
        out.append(m)
    return tuple(out)


@lru_cache(maxsize=None)
def edge_kinds() -> dict[int, EdgeKind]:
    """Edge kind number -> its naming, over every method (a number owned twice is an error)."""
    out: dict[int, EdgeKind] = {}
    for m in methods():
        for k, v in m.kinds.items():
            if k in out:
                raise RuntimeError(f"edge kind {k} is declared by two dedup methods")
            out[k] = v
    return out


def kinds_where(test) -> tuple[int, ...]:
    """Edge kind numbers whose :class:`EdgeKind` passes ``test``, ascending."""
    return tuple(sorted(k for k, v in edge_kinds().items() if test(v)))


@lru_cache(maxsize=None)
def exact_kinds() -> tuple[int, ...]:
    """Kinds that are evidence of an identical copy (ranked before near matches)."""
    return kinds_where(lambda v: v.exact)


@lru_cache(maxsize=None)
def candidate_groups() -> tuple[tuple[int, ...], ...]:
    """The candidate kinds of each resolve phase, in registry order (each group is verified by one phase)."""
    return tuple(m.resolve.candidate_kinds for m in methods() if m.resolve is not None and m.resolve.candidate_kinds)
