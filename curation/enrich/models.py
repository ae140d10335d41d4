"""Finding and loading image-text models offline: a local folder or the Hugging Face cache, never the network.

Two on-disk formats are read:

- **transformers** (``config.json`` with ``model_type`` ``clip``, ``siglip`` or
  ``siglip2``, weights in safetensors or ``pytorch_model.bin``, a tokenizer);
- **open_clip** (``open_clip_config.json`` + ``open_clip_pytorch_model.bin`` or
  ``open_clip_model.safetensors``), converted in memory to a transformers
  ``CLIPModel`` (see :mod:`curation.enrich.openclip`): the open_clip package
  itself is not needed (it requires torchvision).

Everything that can be checked without loading weights is checked in the
driver by :func:`describe_model`, so a bad path fails before any work starts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifests.errors import RecipeError

CLIP_TYPES = ("clip", "siglip", "siglip2")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
_OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class ModelInfo:
    """What the driver knows about a model folder without loading it."""

    path: str
    format: str  # transformers | open_clip
    family: str  # clip | siglip | siglip2
    embed_dim: int
    image_size: int


def resolve_model_path(spec: str, field: str) -> Path:
    """A model folder for a local path or a hub id already in the HF cache (RecipeError otherwise)."""
    p = Path(os.path.expanduser(spec))
    if p.is_absolute() or p.exists():
        if not p.exists():
            raise RecipeError(f"{spec!r} does not exist", field=field)
        if not p.is_dir():
            raise RecipeError(f"{spec!r} is not a folder (a model is a folder holding config.json and weights)",
                              field=field)
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, a malformed id, no hub package: all mean "not here"
        raise RecipeError(f"{spec!r} is neither a local folder nor a model in the Hugging Face cache "
                          "(nothing is downloaded at run time)", field=field) from None


def describe_model(spec: str, field: str) -> ModelInfo:
    """Check a model folder (format, family, weights present) and read its embedding size."""
    path = resolve_model_path(spec, field)
    if (path / "open_clip_config.json").is_file():
        if not any((path / w).is_file() for w in _OPENCLIP_WEIGHTS):
            raise RecipeError(f"{spec!r} has open_clip_config.json but no {' or '.join(_OPENCLIP_WEIGHTS)}", field=field)
        try:
            cfg = json.loads((path / "open_clip_config.json").read_text())["model_cfg"]
            return ModelInfo(str(path), "open_clip", "clip", int(cfg["embed_dim"]), int(cfg["vision_cfg"]["image_size"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecipeError(f"{spec!r}: unreadable open_clip_config.json ({exc})", field=field) from None
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise RecipeError(f"{spec!r} is not a model folder (no config.json or open_clip_config.json)", field=field)
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{spec!r}: unreadable config.json ({exc})", field=field) from None
    family = cfg.get("model_type")
    if family not in CLIP_TYPES:
        raise RecipeError(f"{spec!r} is a {family!r} model, not an image-text model ({', '.join(CLIP_TYPES)})",
                          field=field)
    if not any((path / w).is_file() for w in _WEIGHTS):
        raise RecipeError(f"{spec!r} has no weights ({', '.join(_WEIGHTS[:2])})", field=field)
    vision = cfg.get("vision_config") or {}
    if family == "clip":
        dim = int(cfg.get("projection_dim") or 512)
    else:  # SigLIP embeds in the towers' hidden size (no projection layer)
        dim = int(vision.get("hidden_size") or 768)
    return ModelInfo(str(path), "transformers", family, dim, int(vision.get("image_size") or 224))


def load_model(info: ModelInfo, device: str) -> tuple[Any, Any]:
    """(model in eval mode on ``device``, tokenizer) for a described folder; offline only."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        if info.format == "open_clip":
            from curation.enrich.openclip import load_open_clip

            model, tokenizer = load_open_clip(Path(info.path))
        else:
            model = AutoModel.from_pretrained(info.path, local_files_only=True, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(info.path, local_files_only=True)
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated weights, bad tokenizer files: the recipe's model is unusable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"{info.path!r} cannot be loaded: {first}", field="enrich.embed.model") from None
    model.eval().to(device)
    return model, tokenizer


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its pixels: resize rule, crop, normalisation (from preprocessor_config.json)."""

    shortest_edge: int | None  # CLIP: resize the short side to this, then center-crop
    size: tuple[int, int]  # final (height, width)
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def preprocess_spec(info: ModelInfo) -> Preprocess:
    """The model's preprocessing (defaults per family when the folder has no preprocessor_config.json)."""
    path = Path(info.path)
    cfg: dict[str, Any] = {}
    f = path / "preprocessor_config.json"
    if f.is_file():
        try:
            cfg = json.loads(f.read_text())
        except (OSError, ValueError):
            cfg = {}
    if info.format == "open_clip":
        pp = json.loads((path / "open_clip_config.json").read_text()).get("preprocess_cfg") or {}
        mean = tuple(pp.get("mean") or (0.48145466, 0.4578275, 0.40821073))
        std = tuple(pp.get("std") or (0.26862954, 0.26130258, 0.27577711))
        s = info.image_size
        return Preprocess(s, (s, s), 3, mean, std)  # type: ignore[arg-type]
    if info.family == "clip":
        size = cfg.get("size") or {"shortest_edge": info.image_size}
        crop = cfg.get("crop_size") or {"height": info.image_size, "width": info.image_size}
        short = size.get("shortest_edge") if isinstance(size, dict) else int(size)
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        mean = tuple(cfg.get("image_mean") or (0.48145466, 0.4578275, 0.40821073))
        std = tuple(cfg.get("image_std") or (0.26862954, 0.26130258, 0.27577711))
        return Preprocess(int(short), (int(crop["height"]), int(crop["width"])), int(cfg.get("resample", 3)),
                          mean, std)  # type: ignore[arg-type]
    size = cfg.get("size") or {"height": info.image_size, "width": info.image_size}
    mean = tuple(cfg.get("image_mean") or (0.5, 0.5, 0.5))
    std = tuple(cfg.get("image_std") or (0.5, 0.5, 0.5))
    return Preprocess(None, (int(size["height"]), int(size["width"])), int(cfg.get("resample", 2)),
                      mean, std)  # type: ignore[arg-type]
