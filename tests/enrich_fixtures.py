"""Tiny random CLIP / SigLIP models built from transformers configs and saved to disk (no download).

The tokenizer is a word-level ``tokenizers`` model over a small fixed
vocabulary, saved as tokenizer.json, so that ``AutoTokenizer`` loads it
offline like a real model's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ("a photo of the cat dog bird car tree house red green blue small large picture image with "
         "and on in an apple grandmother jaguar monument music farm animal bus cheetah coffee rocket "
         "astronaut horse moon coins camera flower china text page").split()
SPECIALS = ["<pad>", "<unk>", "<|startoftext|>", "<|endoftext|>"]


def save_tokenizer(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(WORDS + SPECIALS)}  # end-of-text has the highest id, as in CLIP's BPE
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    tok.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                                       special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    return {"vocab_size": len(vocab), "pad": vocab["<pad>"], "bos": bos, "eos": eos}


def tiny_clip(folder: Path, *, seed: int = 0, projection_dim: int = 16, image_size: int = 32) -> Path:
    """A 2-layer random CLIP (vision and text) with its tokenizer and preprocessor config."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    t = save_tokenizer(folder)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=t["pad"],
                         bos_token_id=t["bos"], eos_token_id=t["eos"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size}, "resample": 3,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    }))
    return folder


def tiny_siglip(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """A 2-layer random SigLIP (embedding size 32) with its tokenizer and preprocessor config."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    t = save_tokenizer(folder)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, pad_token_id=t["pad"],
                         bos_token_id=t["bos"], eos_token_id=t["eos"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
    )
    torch.manual_seed(seed)
    SiglipModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "size": {"height": image_size, "width": image_size},
        "resample": 2, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    }))
    return folder


def linear_head(path: Path, dim: int, *, seed: int = 0, hidden: int | None = None) -> Path:
    """A LAION-style head saved as a torch state dict: Linear(dim, 1), or an MLP dim -> hidden -> 1."""
    import torch

    g = torch.Generator().manual_seed(seed)
    if hidden is None:
        state = {"weight": torch.randn(1, dim, generator=g), "bias": torch.randn(1, generator=g)}
    else:
        state = {"layers.0.weight": torch.randn(hidden, dim, generator=g), "layers.0.bias": torch.randn(hidden, generator=g),
                 "layers.2.weight": torch.randn(1, hidden, generator=g), "layers.2.bias": torch.randn(1, generator=g)}
    torch.save(state, path)
    return path


def rng_images(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (48, 40)) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
        p = folder / f"img_{i:03d}.png"
        img.save(p)
        out.append(p)
    return out


CAPTIONS = ("a photo of a cat", "red car", "the dog on a tree", "green house", "small bird", "blue car with a dog")
NOTES = (
    "The quick brown fox jumps over the lazy dog and keeps running through the forest until night falls.",
    "Le renard brun rapide saute par-dessus le chien paresseux et continue de courir dans la forêt.",
    "Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter durch den dunklen Wald.",
    "This is another English sentence that the language filter should keep in the curated output.",
)


def model_corpus(root: Path, n_pairs: int = 12, n_photos: int = 6) -> Path:
    """image_text pairs (folder of images + same-stem captions), plain images and a multilingual JSONL."""
    ps = rng_images(root / "pairs", n_pairs)
    for i, p in enumerate(ps):
        p.with_suffix(".txt").write_text(CAPTIONS[i % len(CAPTIONS)])
    rng_images(root / "photos", n_photos, seed=5)
    (root / "notes.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in NOTES) + "\n")
    return root


def to_open_clip(hf_folder: Path, out: Path) -> Path:
    """Write a transformers CLIP folder as an open_clip checkpoint (the inverse of curation.enrich.openclip)."""
    import shutil

    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(hf_folder, local_files_only=True)
    cfg = model.config
    sd = model.state_dict()
    o = {
        "visual.class_embedding": sd["vision_model.embeddings.class_embedding"],
        "visual.conv1.weight": sd["vision_model.embeddings.patch_embedding.weight"],
        "visual.positional_embedding": sd["vision_model.embeddings.position_embedding.weight"],
        "visual.ln_pre.weight": sd["vision_model.pre_layrnorm.weight"], "visual.ln_pre.bias": sd["vision_model.pre_layrnorm.bias"],
        "visual.ln_post.weight": sd["vision_model.post_layernorm.weight"], "visual.ln_post.bias": sd["vision_model.post_layernorm.bias"],
        "visual.proj": sd["visual_projection.weight"].t().contiguous(),
        "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": sd["text_model.final_layer_norm.weight"], "ln_final.bias": sd["text_model.final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(), "logit_scale": sd["logit_scale"],
    }
    for tower, src, n in (("visual.transformer.resblocks", "vision_model.encoder.layers", cfg.vision_config.num_hidden_layers),
                          ("transformer.resblocks", "text_model.encoder.layers", cfg.text_config.num_hidden_layers)):
        for i in range(n):
            s, d = f"{src}.{i}", f"{tower}.{i}"
            o[f"{d}.attn.in_proj_weight"] = torch.cat([sd[f"{s}.self_attn.{x}_proj.weight"] for x in "qkv"])
            o[f"{d}.attn.in_proj_bias"] = torch.cat([sd[f"{s}.self_attn.{x}_proj.bias"] for x in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                o[f"{d}.{a}.weight"] = sd[f"{s}.{b}.weight"]
                o[f"{d}.{a}.bias"] = sd[f"{s}.{b}.bias"]
    out.mkdir(parents=True, exist_ok=True)
    torch.save(o, out / "open_clip_pytorch_model.bin")
    v, t = cfg.vision_config, cfg.text_config
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
        "embed_dim": cfg.projection_dim, "quick_gelu": v.hidden_act == "quick_gelu",
        "vision_cfg": {"image_size": v.image_size, "layers": v.num_hidden_layers, "width": v.hidden_size,
                       "patch_size": v.patch_size, "head_width": v.hidden_size // v.num_attention_heads,
                       "mlp_ratio": v.intermediate_size / v.hidden_size},
        "text_cfg": {"context_length": t.max_position_embeddings, "vocab_size": t.vocab_size, "width": t.hidden_size,
                     "heads": t.num_attention_heads, "layers": t.num_hidden_layers,
                     "mlp_ratio": t.intermediate_size / t.hidden_size}},
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}}))
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (hf_folder / f).is_file():
            shutil.copy(hf_folder / f, out / f)
    return out
