"""Tokenization strategies for SmolVLM-style models: image splitting, pixel shuffle, positional tokens, video, budgets.

Quick use::

    import tokenization
    s = tokenization.get_strategy("smolvlm-256m", positional="string")
    s.plan_image(1920, 1080)             # rows, cols, resized size, tokens
    s.split_image(pil_image)             # tiles row-major + global, normalized
    s.image_prompt(3, 4)                 # the text that replaces <image>
    tokenization.pixel_shuffle(x, 4)     # [B, N, D] -> [B, N/16, 16 D]
    tokenization.token_counts(table, s)  # tokens_visual / tokens_text / tokens per row

See docs/tokenization.md.
"""
from __future__ import annotations

from tokenization.base_tokenizer import load_tokenizer, resolve_tokenizer, train_bpe, train_from_manifest
from tokenization.budget import TOKEN_COLUMNS, add_tokens_column, token_counts
from tokenization.positional import STYLES
from tokenization.presets import PRESETS
from tokenization.shuffle import pixel_shuffle, pixel_unshuffle
from tokenization.strategy import ImagePlan, SplitResult, Strategy, get_strategy, preset_names
from tokenization.video import VideoFrames, VideoPlan, sample_frame_indices

__all__ = [
    "PRESETS",
    "STYLES",
    "TOKEN_COLUMNS",
    "ImagePlan",
    "SplitResult",
    "Strategy",
    "VideoFrames",
    "VideoPlan",
    "add_tokens_column",
    "get_strategy",
    "load_tokenizer",
    "pixel_shuffle",
    "pixel_unshuffle",
    "preset_names",
    "resolve_tokenizer",
    "sample_frame_indices",
    "token_counts",
    "train_bpe",
    "train_from_manifest",
]
