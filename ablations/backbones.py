"""Pretrained backbones from local folders (``--vision`` / ``--lm``), and the model factory.

The folders are anything transformers' ``from_pretrained`` reads with
``local_files_only=True``: a SigLIP/CLIP model or vision tower for ``--vision``,
a causal LM with its ``tokenizer.json`` for ``--lm``. Nothing is fetched from a
hub. Their configs are checked against the grid before any training, so a
patch-size mismatch is a one-line error, not a shape error at step one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ablations.grid import RunSettings
from ablations.model import ModelConfig, PretrainedLM, PretrainedVision, TinyVLM
from manifests.errors import UserError


@dataclass(frozen=True)
class Backbones:
    """Local pretrained parts a grid uses instead of the from-scratch ones."""

    vision: Path | None = None
    lm: Path | None = None
    freeze_lm: bool = False

    def check(self) -> dict[str, Any]:
        """Read the configs (no weights) and return the facts the grid is validated against."""
        facts: dict[str, Any] = {}
        if self.vision is not None:
            vcfg = vision_config(self.vision)
            facts["vision_patch"] = int(vcfg.patch_size)
            facts["vision_image_size"] = int(vcfg.image_size)
        if self.lm is not None:
            _config(self.lm, "--lm")
            if not (self.lm / "tokenizer.json").is_file():
                raise UserError(f"{self.lm} has no tokenizer.json next to the LM weights", field="--lm")
        if self.freeze_lm and self.lm is None:
            raise UserError("--freeze-lm needs --lm", field="--freeze-lm")
        return facts


def _dtype_kw() -> str:
    """transformers >= 4.56 calls it ``dtype``; earlier releases only know ``torch_dtype``.

    Weights load as float32 either way: AdamW on bf16 weights loses small updates.
    """
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _config(path: Path, flag: str):
    from transformers import AutoConfig

    if not path.is_dir():
        raise UserError(f"{path} is not a folder", field=flag)
    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/KeyError variants
        raise UserError(f"{path}: not a transformers model folder ({str(exc).splitlines()[0]})", field=flag) from None


def vision_config(path: Path):
    cfg = _config(path, "--vision")
    vcfg = getattr(cfg, "vision_config", None) or cfg
    for attr in ("patch_size", "image_size", "hidden_size"):
        if not hasattr(vcfg, attr):
            raise UserError(f"{path}: config has no {attr}; a ViT-style vision tower is needed", field="--vision")
    return vcfg


def load_vision(path: Path, tile: int) -> PretrainedVision:
    """The vision tower of a local SigLIP/CLIP-style checkpoint (the text half, if any, is dropped)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), local_files_only=True, **{_dtype_kw(): torch.float32})
    tower = getattr(model, "vision_model", model)
    if not hasattr(tower, "config"):
        tower.config = vision_config(path)
    return PretrainedVision(tower, int(vision_config(path).image_size), tile)


def load_lm(path: Path, vocab_size: int, freeze: bool) -> PretrainedLM:
    """A local causal LM resized to the run's vocabulary (new rows for added special tokens).

    With ``freeze`` only the embedding rows that did not exist before are
    trained: a gradient hook zeroes the others, as in SmolVLM's first stage.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, **{_dtype_kw(): torch.float32})
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size > old:
        model.resize_token_embeddings(vocab_size)
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
        emb = model.get_input_embeddings().weight
        emb.requires_grad_(True)
        keep = torch.zeros(emb.shape[0], 1)
        keep[old:] = 1.0
        emb.register_hook(lambda g: g * keep.to(g.device, g.dtype))
    return PretrainedLM(model)


def build_model(s: RunSettings, vocab_size: int, image_token_id: int, backbones: Backbones) -> TinyVLM:
    """The run's VLM: from-scratch parts sized by the settings, pretrained parts where given."""
    cfg = ModelConfig(
        vocab_size=vocab_size,
        image_token_id=image_token_id,
        tile=s.tile,
        patch=s.patch,
        pixel_shuffle=s.pixel_shuffle,
        vision_width=s.vision_width,
        vision_depth=s.vision_depth,
        vision_heads=s.vision_heads,
        width=s.width,
        depth=s.depth,
        heads=s.heads,
    )
    vision = load_vision(backbones.vision, s.tile) if backbones.vision else None
    lm = load_lm(backbones.lm, vocab_size, backbones.freeze_lm) if backbones.lm else None
    return TinyVLM(cfg, vision=vision, lm=lm)
