"""open_clip checkpoints loaded as transformers ``CLIPModel`` without the open_clip package.

open_clip needs torchvision (not installable here), but its standard ViT
checkpoints are the same network as transformers' CLIP under other names:
one fused ``in_proj`` per attention block instead of q/k/v projections,
projections stored as ``[width, embed]`` matrices instead of linear layers.
:func:`convert_state_dict` renames and splits them; the model config comes
from ``open_clip_config.json`` (``model_cfg``: ``embed_dim``, ``vision_cfg``,
``text_cfg``, ``quick_gelu``).

Covered: ViT image towers with a linear projection and the standard text
transformer (OpenAI and LAION ViT-B/L/H/g checkpoints). Not covered: ConvNeXt /
ModifiedResNet towers, attentional pooling, CoCa, HF-text towers; they are
reported as a bad model folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from manifests.errors import RecipeError


def _config(model_cfg: dict[str, Any]):
    from transformers import CLIPConfig

    v, t = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    if isinstance(v.get("layers"), (list, tuple)) or "timm_model_name" in v or "hf_model_name" in t:
        raise ValueError("only ViT image towers and the standard text transformer are supported")
    act = "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"
    vw = int(v["width"])
    tw = int(t.get("width", 512))
    return CLIPConfig(
        projection_dim=int(model_cfg["embed_dim"]),
        vision_config=dict(hidden_size=vw, intermediate_size=int(vw * float(v.get("mlp_ratio", 4.0))),
                           num_hidden_layers=int(v["layers"]), num_attention_heads=vw // int(v.get("head_width", 64)),
                           image_size=int(v["image_size"]), patch_size=int(v["patch_size"]), hidden_act=act),
        text_config=dict(hidden_size=tw, intermediate_size=int(tw * float(t.get("mlp_ratio", 4.0))),
                         num_hidden_layers=int(t.get("layers", 12)), num_attention_heads=int(t.get("heads", 8)),
                         max_position_embeddings=int(t.get("context_length", 77)),
                         vocab_size=int(t.get("vocab_size", 49408)), hidden_act=act,
                         # eos_token_id 2 selects transformers' legacy pooling at argmax(input_ids): open_clip's
                         # own rule (its end-of-text token has the highest id)
                         bos_token_id=49406, eos_token_id=2, pad_token_id=0),
    )


def _blocks(src: dict, prefix: str, dst_prefix: str, out: dict) -> None:
    i = 0
    while f"{prefix}.{i}.ln_1.weight" in src:
        s, d = f"{prefix}.{i}", f"{dst_prefix}.{i}"
        w, b = src[f"{s}.attn.in_proj_weight"], src[f"{s}.attn.in_proj_bias"]
        for name, wk, bk in zip(("q", "k", "v"), w.chunk(3, dim=0), b.chunk(3, dim=0)):
            out[f"{d}.self_attn.{name}_proj.weight"] = wk
            out[f"{d}.self_attn.{name}_proj.bias"] = bk
        for a, bname in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            out[f"{d}.{bname}.weight"] = src[f"{s}.{a}.weight"]
            out[f"{d}.{bname}.bias"] = src[f"{s}.{a}.bias"]
        i += 1


def convert_state_dict(src: dict) -> dict:
    """An open_clip ViT CLIP state dict under transformers ``CLIPModel`` names."""
    out = {
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
        "visual_projection.weight": src["visual.proj"].t().contiguous(),
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "text_projection.weight": src["text_projection"].t().contiguous(),
        "logit_scale": src["logit_scale"],
    }
    _blocks(src, "visual.transformer.resblocks", "vision_model.encoder.layers", out)
    _blocks(src, "transformer.resblocks", "text_model.encoder.layers", out)
    return out


def load_open_clip(folder: Path) -> tuple[Any, Any]:
    """(CLIPModel, tokenizer or None) for an open_clip folder; the tokenizer comes from HF files beside it."""
    import torch
    from transformers import AutoTokenizer, CLIPModel

    cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    try:
        config = _config(cfg)
    except (KeyError, ValueError, TypeError) as exc:
        raise RecipeError(f"{str(folder)!r}: unsupported open_clip model ({exc})", field="enrich.embed.model") from None
    if (folder / "open_clip_model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "open_clip_model.safetensors"))
    else:
        state = torch.load(folder / "open_clip_pytorch_model.bin", map_location="cpu", weights_only=True)
    if "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = CLIPModel(config)
    try:
        missing, unexpected = model.load_state_dict(convert_state_dict(state), strict=False)
    except (KeyError, RuntimeError) as exc:
        raise RecipeError(f"{str(folder)!r}: open_clip weights do not match their config ({exc})",
                          field="enrich.embed.model") from None
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise RecipeError(f"{str(folder)!r}: open_clip weights lack {missing[0]}", field="enrich.embed.model")
    tokenizer = None
    if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return model, tokenizer
