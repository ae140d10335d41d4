"""The tokenization strategy: one frozen, hashable record of every choice the SmolVLM paper ablated.

A strategy is data (presets live in :mod:`tokenization.presets`); the methods are
thin entry points into the modules that do the work (geometry, pixels, prompts,
positional, video). Build one with :func:`get_strategy`; derive variants with
:meth:`Strategy.replace`.
"""
from __future__ import annotations

import dataclasses
import re
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from manifests.errors import UserError
from tokenization import geometry, pixels, prompts
from tokenization.positional import STYLES
from tokenization.presets import (
    DEFAULT_FRAME_TEMPLATE,
    DEFAULT_MEDIA_OUTRO,
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_VIDEO_INTRO,
    PRESETS,
)


@dataclass(frozen=True)
class ImagePlan:
    """Where an image of a given size goes: pure arithmetic, no pixels."""

    width: int
    height: int
    resized: tuple[int, int]  # (w, h) after the longest-edge resize
    size: tuple[int, int]  # (w, h) that is cut into tiles (tile x tile when not split)
    rows: int  # 0 when not split
    cols: int
    tiles: int  # crops fed to the vision encoder, global image included
    image_seq_len: int  # <image> tokens per tile
    image_tokens: int  # tiles * image_seq_len
    seq_len: int  # prompt length of the whole image block under the positional style (estimate)
    tile_boxes: tuple[tuple[int, int, int, int], ...]  # (left, top, right, bottom) of each split tile, row-major

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["tile_boxes"] = [list(b) for b in self.tile_boxes]
        return d


@dataclass(frozen=True)
class SplitResult:
    """Tiles of one image, row-major with the global image last (or the single image when not split)."""

    tiles: np.ndarray  # [tiles, 3, tile, tile], float32 normalized (uint8 when normalize=False)
    rows: int
    cols: int
    plan: ImagePlan


def _check_grid(rows: int, cols: int) -> None:
    if rows < 0 or cols < 0 or (rows == 0) != (cols == 0):
        raise UserError(f"invalid grid {rows}x{cols}: rows and cols are both 0 (not split) or both positive", field="grid")


def _positive_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"must be an integer number of pixels, got {value!r}", field=name)
    if value <= 0:
        raise UserError(f"must be positive, got {value}", field=name)
    return int(value)


@dataclass(frozen=True)
class Strategy:
    """Every tokenization choice of a SmolVLM-style model; see docs/tokenization.md for each field."""

    name: str = "custom"
    # image splitting
    longest_edge: int = 2048  # the image's longest side is resized to this (small images are upscaled)
    tile: int = 512  # max_image_size: the encoder's input side
    patch: int = 16  # vision encoder patch size
    pixel_shuffle: int = 4  # r: r x r patch embeddings fold into one token
    do_split: bool = True
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # positional markers: learned | string | none
    positional: str = "learned"
    image_token: str = "<image>"
    fake_image_token: str = "<fake_token_around_image>"
    global_image_token: str = "<global-img>"
    # video
    video_fps: float = 1.0
    video_max_frames: int = 64
    video_skip_secs: float = 1.0
    video_longest_edge: int = 512  # frames: resized to this longest edge, then to one tile
    frame_averaging: int = 1  # average each k consecutive sampled frames into one (finding 4)
    # media wrappers and system prompt (finding 6)
    media_intro: bool = True
    media_outro: bool = True
    image_intro_text: str = ""
    image_outro_text: str = ""
    video_intro_text: str = DEFAULT_VIDEO_INTRO
    video_outro_text: str = DEFAULT_MEDIA_OUTRO
    frame_template: str = DEFAULT_FRAME_TEMPLATE
    system_prompt: bool = False
    system_prompt_text: str = DEFAULT_SYSTEM_PROMPT
    # text token estimate (when no tokenizer is given)
    text_bytes_per_token: float = 4.0
    turn_overhead_tokens: int = 3  # "User:" / "<end_of_utterance>" / "\n" around each turn

    def __post_init__(self) -> None:
        _validate(self)

    # ---- derived numbers ---------------------------------------------------------------
    @property
    def grid_side(self) -> int:
        """Patches per tile side (tile // patch)."""
        return self.tile // self.patch

    @property
    def image_seq_len(self) -> int:
        """<image> tokens per tile: (tile // patch)² / r²."""
        return int(self.grid_side**2 / self.pixel_shuffle**2)

    @property
    def max_grid_side(self) -> int:
        """Largest rows/cols any image can get; the learned marker vocabulary covers all grids up to it."""
        return geometry.max_grid_side(self.longest_edge, self.tile)

    def replace(self, **overrides: Any) -> "Strategy":
        """A validated copy with some fields changed (string values are parsed as in ``--set``)."""
        return dataclasses.replace(self, **_coerce(overrides))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (what results files and manifest.json record)."""
        d = dataclasses.asdict(self)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> "Strategy":
        """Inverse of :meth:`to_dict`; unknown keys raise UserError naming them."""
        return cls(**_coerce(fields))

    # ---- images ------------------------------------------------------------------------
    def plan_images(self, widths: Sequence[int] | np.ndarray, heights: Sequence[int] | np.ndarray) -> geometry.GridArrays:
        """Vectorized :meth:`plan_image` (sizes must be positive)."""
        w = np.asarray(widths, dtype=np.int64)
        h = np.asarray(heights, dtype=np.int64)
        if w.size and (w.min() <= 0 or h.min() <= 0):
            raise UserError("image sizes must be positive", field="width" if w.min() <= 0 else "height")
        return geometry.plan_grids(w, h, longest_edge=self.longest_edge, tile=self.tile, do_split=self.do_split)

    def plan_image(self, width: int, height: int) -> ImagePlan:
        """Rows, cols, resized size, tiles and token counts of a width x height image, without pixels."""
        w, h = _positive_size(width, "width"), _positive_size(height, "height")
        g = self.plan_images([w], [h])
        rows, cols, tiles = int(g.rows[0]), int(g.cols[0]), int(g.tiles[0])
        t = self.tile
        boxes = tuple((c * t, r * t, (c + 1) * t, (r + 1) * t) for r in range(rows) for c in range(cols))
        return ImagePlan(
            width=w,
            height=h,
            resized=(int(g.resized_width[0]), int(g.resized_height[0])),
            size=(int(g.width[0]), int(g.height[0])),
            rows=rows,
            cols=cols,
            tiles=tiles,
            image_seq_len=self.image_seq_len,
            image_tokens=tiles * self.image_seq_len,
            seq_len=self.sequence_length(rows, cols),
            tile_boxes=boxes,
        )

    @cached_property
    def _normalizer(self) -> pixels.Normalizer:
        return pixels.Normalizer(self.image_mean, self.image_std)

    def split_image(
        self, image: Image.Image | np.ndarray, *, normalize: bool = True, out: np.ndarray | None = None
    ) -> SplitResult:
        """Tiles (row-major, global last) exactly as transformers' SmolVLM processor makes them.

        Alpha is composited on white. With ``normalize=False`` the tiles are uint8 RGB
        (4x smaller, for storing); otherwise float32 ``(v/255 - mean) / std``. ``out``
        ([tiles, 3, T, T] of that dtype, e.g. a slice of a batch tensor) receives the
        tiles in place, saving a copy.
        """
        if isinstance(image, np.ndarray):
            image = Image.fromarray(np.ascontiguousarray(image))
        if not isinstance(image, Image.Image):
            raise UserError(f"expected a PIL image or a uint8 array, got {type(image).__name__}", field="image")
        plan = self.plan_image(*image.size)
        rgb = pixels.to_rgb(image)
        rw, rh = plan.resized
        resized = pixels.resize(rgb, rw, rh)
        t = self.tile
        norm = self._normalizer if normalize else None
        dtype = np.float32 if normalize else np.uint8
        if out is None:
            out = np.empty((plan.tiles, 3, t, t), dtype=dtype)
        elif out.shape != (plan.tiles, 3, t, t) or out.dtype != dtype:
            raise UserError(f"out must be {(plan.tiles, 3, t, t)} {np.dtype(dtype)}, got {out.shape} {out.dtype}", field="out")
        if plan.rows:
            snapped = pixels.resize(resized, *plan.size)
            pixels.write_tiles(snapped, plan.rows, plan.cols, t, out, norm)
            pixels.encode_single(pixels.resize(snapped, t, t), out[-1], norm)
        else:
            # not split: straight to one tile (the snapped size is already tile x tile when splitting)
            single = pixels.resize(resized, *plan.size) if self.do_split else resized
            pixels.encode_single(pixels.resize(single, t, t), out[0], norm)
        return SplitResult(out, plan.rows, plan.cols, plan)

    def split_images(
        self, images: Iterable[Image.Image | np.ndarray], *, normalize: bool = True, workers: int = 1
    ) -> list[SplitResult]:
        """:meth:`split_image` over many images; ``workers`` > 1 uses threads (Pillow resizes release the GIL)."""
        images = list(images)
        if workers <= 1 or len(images) < 2:
            return [self.split_image(im, normalize=normalize) for im in images]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda im: self.split_image(im, normalize=normalize), images))

    # ---- prompts ---------------------------------------------------------------------
    def image_prompt(self, rows: int, cols: int) -> str:
        """Text that replaces one ``<image>`` placeholder (identical to transformers' with default fields)."""
        _check_grid(rows, cols)
        block = prompts.image_block(
            rows,
            cols,
            self.image_seq_len,
            self.image_token,
            self.fake_image_token,
            self.global_image_token,
            markers=self.positional != "none",
        )
        if self.media_intro and self.image_intro_text:
            block = self.image_intro_text + block
        if self.media_outro and self.image_outro_text:
            block = block + self.image_outro_text
        return block

    def video_prompt(self, timestamps: Sequence[float], duration: float | None) -> str:
        """Text that replaces one ``<video>`` placeholder, given the (kept) frame timestamps in seconds."""
        if duration is None:
            duration = timestamps[-1] if len(timestamps) else 0.0
        return prompts.video_block(
            list(timestamps),
            duration,
            self.image_seq_len,
            image_token=self.image_token,
            fake_token=self.fake_image_token,
            global_token=self.global_image_token,
            markers=self.positional != "none",
            intro=self.video_intro_text if self.media_intro else "",
            outro=self.video_outro_text if self.media_outro else "",
            frame_template=self.frame_template,
        )

    def system_text(self) -> str:
        """The system prompt text when enabled, else ''."""
        return self.system_prompt_text if self.system_prompt else ""

    def sequence_length(self, rows: int, cols: int, tokenizer: Any = None, style: str | None = None) -> int:
        """Tokens the image block of a rows x cols grid takes in the LM sequence under a positional style.

        Validates the grid like :meth:`image_prompt`.

        Exact with a base ``tokenizers.Tokenizer``; otherwise the estimate of
        :mod:`tokenization.counting` (special tokens 1 each, pre-tokens for the text between).
        """
        from tokenization.counting import Counter, estimate_counter

        _check_grid(rows, cols)
        strat = self if style is None or style == self.positional else self.replace(positional=style)
        counter = estimate_counter(strat) if tokenizer is None else Counter(strat, tokenizer)
        return counter.block_tokens(rows, cols)

    def sequence_lengths(self, rows: int, cols: int, tokenizer: Any = None) -> dict[str, int]:
        """:meth:`sequence_length` under each positional style, for ablation tables."""
        return {s: self.sequence_length(rows, cols, tokenizer, style=s) for s in STYLES}

    # ---- tokenizer -----------------------------------------------------------------------
    def special_tokens(self) -> list[str]:
        """Tokens registered as added special tokens under this positional style."""
        from tokenization.positional import special_tokens

        return special_tokens(self)

    def build_tokenizer(self, base: Any) -> Any:
        """A copy of a ``tokenizers.Tokenizer`` with this strategy's special tokens added (one id each)."""
        from tokenization.positional import with_strategy_tokens

        return with_strategy_tokens(base, self)

    # ---- video -------------------------------------------------------------------------
    def sample_frames(self, total_frames: int, native_fps: float, duration: float | None = None) -> np.ndarray:
        """Frame indices SmolVLM samples (fps, max frames, 1 s skipped at each end when long enough)."""
        from tokenization.video import sample_frame_indices

        return sample_frame_indices(
            total_frames, native_fps, duration, fps=self.video_fps, max_frames=self.video_max_frames,
            skip_secs=self.video_skip_secs,
        )

    def plan_video(self, total_frames: int, native_fps: float, duration: float | None = None) -> "Any":
        """Indices, timestamps, kept frames, tokens and prompt of a video, from metadata only."""
        from tokenization.video import plan_video

        return plan_video(self, total_frames, native_fps, duration)

    def load_video(self, path: Any, *, normalize: bool = True, start_s: float | None = None,
                   end_s: float | None = None) -> "Any":
        """Decode the sampled frames of a video, or of its clip [start_s, end_s), into one tile each."""
        from tokenization.video import load_video

        return load_video(self, path, normalize=normalize, start_s=start_s, end_s=end_s)


# ---- construction & validation ---------------------------------------------------------------
_FIELDS = {f.name: f for f in dataclasses.fields(Strategy)}
_TRUE = {"1", "true", "yes", "on"}
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}
_ESCAPE = re.compile(r"\\(n|t|\\)")
_FALSE = {"0", "false", "no", "off"}


def _field_kind(name: str) -> str:
    default = _FIELDS[name].default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    if isinstance(default, tuple):
        return "triple"
    return "str"


def _coerce_one(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise UserError(f"unknown strategy field (known: {', '.join(sorted(_FIELDS))})", field=name)
    kind = _field_kind(name)
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in _TRUE | _FALSE:
                    return low in _TRUE
                raise ValueError
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise ValueError
        if kind == "int":
            if isinstance(value, str):
                return int(value.strip())
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    return int(value)
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value.strip() if isinstance(value, str) else value)
        if kind == "triple":
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = [value]
            vals = tuple(float(v) for v in value)
            if len(vals) == 1:
                vals = vals * 3
            if len(vals) != 3:
                raise ValueError
            return vals
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise UserError(f"expected {kind}, got {value!r}", field=name) from None


def _coerce(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _coerce_one(k, v) for k, v in overrides.items()}


def _check_template(value: str, allowed: set[str], name: str) -> None:
    try:
        keys = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        raise UserError(f"bad template: {exc}", field=name) from None
    extra = keys - allowed
    if extra:
        raise UserError(f"unknown placeholder(s) {sorted(extra)}; allowed: {sorted(allowed)}", field=name)


def _validate(s: Strategy) -> None:
    for name in ("longest_edge", "tile", "patch", "pixel_shuffle", "video_max_frames", "video_longest_edge", "frame_averaging"):
        v = getattr(s, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"must be a positive integer, got {v!r}", field=name)
    if s.turn_overhead_tokens < 0:
        raise UserError("must be >= 0", field="turn_overhead_tokens")
    if s.patch > s.tile:
        raise UserError(f"patch {s.patch} is larger than the tile {s.tile}", field="patch")
    if s.grid_side % s.pixel_shuffle:
        raise UserError(
            f"r={s.pixel_shuffle} does not divide the {s.grid_side}x{s.grid_side} patch grid "
            f"(tile {s.tile} // patch {s.patch})",
            field="pixel_shuffle",
        )
    if s.positional not in STYLES:
        raise UserError(f"must be one of {', '.join(STYLES)}, got {s.positional!r}", field="positional")
    if not s.video_fps > 0:
        raise UserError(f"must be > 0, got {s.video_fps}", field="video_fps")
    if s.video_skip_secs < 0:
        raise UserError(f"must be >= 0, got {s.video_skip_secs}", field="video_skip_secs")
    if not s.text_bytes_per_token > 0:
        raise UserError(f"must be > 0, got {s.text_bytes_per_token}", field="text_bytes_per_token")
    if len(s.image_std) != 3 or min(s.image_std) <= 0:
        raise UserError("needs three positive values", field="image_std")
    if len(s.image_mean) != 3:
        raise UserError("needs three values", field="image_mean")
    for name in ("image_token", "fake_image_token", "global_image_token"):
        if not getattr(s, name):
            raise UserError("must not be empty", field=name)
    _check_template(s.video_intro_text, {"frame_count", "video_duration"}, "video_intro_text")
    _check_template(s.frame_template, {"timestamp"}, "frame_template")


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_strategy(name: str | Strategy = "smolvlm-256m", **overrides: Any) -> Strategy:
    """A preset (or an existing strategy) with some fields overridden; unknown names raise UserError."""
    if isinstance(name, Strategy):
        return name.replace(**overrides) if overrides else name
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r} (known: {', '.join(preset_names())})", field="preset")
    fields = dict(PRESETS[name])
    fields.update(_coerce(overrides))
    fields.setdefault("name", name)
    return Strategy(**fields)


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings (the CLI's ``--set``) to a dict; backslash escapes in values are decoded."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"expected key=value, got {item!r}", field="--set")
        if key not in _FIELDS:
            raise UserError(f"unknown strategy field (known: {', '.join(sorted(_FIELDS))})", field=key)
        if _field_kind(key) == "str":
            value = _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], value)
        out[key] = value
    return out
