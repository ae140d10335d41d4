"""Engines by ``--engine`` name: one line per engine, imported only when chosen."""
from __future__ import annotations

import importlib

from manifests.errors import UserError

ENGINES: dict[str, str] = {
    "ray": "curation.engine.ray_engine:RayEngine",
    "local": "curation.engine.local:LocalEngine",
}


def get_engine(name: str):
    """A fresh engine instance for ``name`` (UserError naming ``--engine`` for an unknown one)."""
    if name not in ENGINES:
        raise UserError(f"unknown engine {name!r} ({' or '.join(ENGINES)})", field="--engine")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
