"""Device choice for model operators: ``auto`` takes a GPU when the worker has one."""
from __future__ import annotations


def cuda_available() -> bool:
    """A CUDA device is visible to this process (torch imported lazily)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the model operators
        return False
    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a configured ``auto|cpu|cuda``."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device
