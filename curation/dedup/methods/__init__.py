"""Dedup methods: one module each (exact, phash, minhash, video, semantic) plus the registry.

Each module owns its config model, its edge kinds, its part of the signature
fingerprint and its resolve phase (see :mod:`curation.dedup.methods.base`);
:mod:`curation.dedup.methods.registry` lists them, one line per method.
"""
from curation.dedup.methods.base import DedupMethod, EdgeKind, RecordContext, ResolveContext, ResolvePhase
from curation.dedup.methods.registry import METHODS, candidate_groups, edge_kinds, exact_kinds, kinds_where, methods

__all__ = ["DedupMethod", "EdgeKind", "METHODS", "RecordContext", "ResolveContext", "ResolvePhase", "candidate_groups", "edge_kinds",
           "exact_kinds", "kinds_where", "methods"]
