"""Ablation runner: train small VLMs over a grid of tokenization choices and report quality against cost.

Entry points (imported lazily so ``smolcurate --help`` does not load torch)::

    from ablations import run_grid, AblationOptions, load_grid, expand, generate_task

See docs/ablations.md.
"""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "run_grid": "ablations.runner",
    "AblationOptions": "ablations.runner",
    "load_grid": "ablations.grid",
    "parse_grid": "ablations.grid",
    "expand": "ablations.grid",
    "Grid": "ablations.grid",
    "RunSettings": "ablations.grid",
    "TaskSpec": "ablations.grid",
    "generate_task": "ablations.tasks",
    "TinyVLM": "ablations.model",
    "ModelConfig": "ablations.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ablations' has no attribute {name!r}")
