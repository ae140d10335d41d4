"""Named tokenization presets, as plain data.

The numbers are those the released SmolVLM / Idefics3 processors use (see
../shared/smolvlm-facts.md); every field can be overridden through
:func:`tokenization.get_strategy`, so an ablation is a preset plus a few edits.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

#: transformers' SmolVLM default system message (video_processing_smolvlm.DEFAULT_SYSTEM_MESSAGE).
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the "
    "user provides, and assist the user with a variety of tasks using natural language."
)
#: transformers' SmolVLM video intro; ``{frame_count}`` is spelled in words, ``{video_duration}`` is H:MM:SS.
DEFAULT_VIDEO_INTRO = (
    "You are provided the following series of {frame_count} frames from a {video_duration} [H:MM:SS] video.\n"
)
DEFAULT_MEDIA_OUTRO = "\n\n"
DEFAULT_FRAME_TEMPLATE = "\nFrame from {timestamp}:"

_SMOLVLM_SMALL: dict[str, Any] = {
    "longest_edge": 2048,
    "tile": 512,
    "patch": 16,
    "pixel_shuffle": 4,
    "video_longest_edge": 512,
    "positional": "learned",  # the 256M/500M release trained single added tokens
}

#: preset name -> the fields it sets (the rest take the Strategy defaults).
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "smolvlm-256m": MappingProxyType(dict(_SMOLVLM_SMALL)),
        "smolvlm-500m": MappingProxyType(dict(_SMOLVLM_SMALL)),
        "smolvlm-2.2b": MappingProxyType(
            {"longest_edge": 1536, "tile": 384, "patch": 14, "pixel_shuffle": 3, "video_longest_edge": 384,
             "positional": "string"}  # SmolVLM-Instruct 2.2B wrote the markers as text
        ),
        "idefics3": MappingProxyType(
            {"longest_edge": 1456, "tile": 364, "patch": 14, "pixel_shuffle": 2, "video_longest_edge": 364,
             "positional": "string"}
        ),
    }
)
