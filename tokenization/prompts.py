"""Prompt strings: the image block and the video template, as transformers' SmolVLM processor writes them.

With the default fields the output is character-for-character what
``processing_smolvlm.get_image_prompt_string`` and ``replace_video_token``
produce; the ``none`` positional style drops the ``<row_i_col_j>`` and
``<global-img>`` markers, and intro/outro/system texts can be switched for the
paper's finding-6 ablations.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Sequence

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ("", "thousand", "million", "billion", "trillion")


def _below_100(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    if not hundreds:
        return _below_100(rest)
    return f"{_ONES[hundreds]} hundred" + (f" and {_below_100(rest)}" if rest else "")


def number_to_words(n: int) -> str:
    """English cardinal as num2words writes it ("sixty-four", "one thousand, two hundred and one").

    transformers spells the frame count with num2words; this keeps the video intro
    identical without the extra dependency.
    """
    if n < 0:
        raise ValueError(f"frame count must be non-negative, got {n}")
    if n < 1000:
        return _below_1000(n)
    groups: list[tuple[int, str]] = []
    scale = 0
    while n:
        n, group = divmod(n, 1000)
        if scale >= len(_SCALES):
            raise ValueError("number too large to spell")
        if group:
            groups.append((group, _SCALES[scale]))
        scale += 1
    groups.reverse()
    out = ""
    for i, (group, name) in enumerate(groups):
        words = _below_1000(group) + (f" {name}" if name else "")
        if i == 0:
            out = words
        elif not name and group < 100:
            out += f" and {words}"
        else:
            out += f", {words}"
    return out


def format_duration(seconds: float) -> str:
    """H:MM:SS of the whole seconds, as ``str(timedelta(seconds=int(d)))`` writes it."""
    return str(timedelta(seconds=int(seconds)))


def format_timestamp(seconds: float) -> str:
    """MM:SS of a frame time, as transformers' video template writes it."""
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def single_image_block(seq_len: int, image_token: str, fake_token: str, global_token: str | None) -> str:
    """One un-split image (or video frame); `global_token` None drops the marker (style ``none``)."""
    return f"{fake_token}{global_token or ''}{image_token * seq_len}{fake_token}"


def split_image_block(
    rows: int, cols: int, seq_len: int, image_token: str, fake_token: str, global_token: str | None, markers: bool
) -> str:
    """Tiles row-major, a newline after each row, then a blank line and the global image."""
    tile_tokens = image_token * seq_len
    parts: list[str] = []
    for r in range(1, rows + 1):
        for c in range(1, cols + 1):
            parts.append(f"{fake_token}<row_{r}_col_{c}>{tile_tokens}" if markers else f"{fake_token}{tile_tokens}")
        parts.append("\n")
    parts.append("\n")
    parts.append(single_image_block(seq_len, image_token, fake_token, global_token))
    return "".join(parts)


def image_block(
    rows: int, cols: int, seq_len: int, image_token: str, fake_token: str, global_token: str, markers: bool
) -> str:
    """The expansion of one ``<image>`` placeholder; rows = cols = 0 means not split."""
    gtok = global_token if markers else None
    if rows == 0 and cols == 0:
        return single_image_block(seq_len, image_token, fake_token, gtok)
    return split_image_block(rows, cols, seq_len, image_token, fake_token, gtok, markers)


def video_block(
    timestamps: Sequence[float],
    duration: float,
    seq_len: int,
    *,
    image_token: str,
    fake_token: str,
    global_token: str,
    markers: bool,
    intro: str,
    outro: str,
    frame_template: str,
) -> str:
    """Intro (frame count in words, H:MM:SS), a timestamp line and a one-tile block per frame, outro."""
    gtok = global_token if markers else None
    frame = single_image_block(seq_len, image_token, fake_token, gtok)
    parts = [intro.format(frame_count=number_to_words(len(timestamps)), video_duration=format_duration(duration))]
    for t in timestamps:
        parts.append(frame_template.format(timestamp=format_timestamp(t)))
        parts.append(frame)
    parts.append(outro)
    return "".join(parts)
