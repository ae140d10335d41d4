"""Diagnostic task generators: write manifests whose answers depend on one tokenization choice.

- ``read``: a snippet of real document text rendered at a random font size and
  position. Small fonts survive only with enough visual tokens per pixel, so it
  responds to the pixel-shuffle ratio and to image splitting. As a video, one
  word per second: frame sampling and frame averaging decide what is legible.
- ``locate``: a red disc in one cell of a regions x regions layout over a real
  photo; the answer is its row and column. When cells coincide with tiles, the
  positional tokens are the cheapest way to the answer.
- ``count``: how many red discs (among blue squares) over a real photo; as a
  video, in how many frames a red disc appears (frame averaging blurs it).
- ``colors``: the colours of 1..max_count discs over a real photo, left to
  right; as a video, one disc per frame and the colours in frame order. Colour
  is learned in a few hundred steps from scratch, where letter shapes are not,
  so the task isolates what a tokenization choice keeps: averaging two frames
  blends two colours and loses their order, small discs shrink under an
  unsplit downscale.

Each generator is deterministic in ``TaskSpec.seed``; the manifest is written
once per spec (its folder name carries a hash of the spec) and reused, so
resuming a grid never regenerates data.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw, ImageFont

from ablations.grid import TaskSpec
from ablations.sources import load_backgrounds, load_text, sample_snippets, words_of
from manifests.errors import RecipeError
from manifests.schema import CORE_SCHEMA, make_id
from media.encode import encode_image, write_video as encode_video

RED = (220, 30, 30)
DISTRACTOR_COLORS = np.array([(40, 80, 220), (30, 150, 60), (230, 180, 20)], dtype=np.uint8)
VIDEO_FPS = 1.0

READ_QUESTION = "What does the text in the image say?"
READ_VIDEO_QUESTION = "Which words are shown in the video, in order?"
LOCATE_QUESTION = "Where is the red disc? Answer with its row and column."
COUNT_QUESTION = "How many red discs are there?"
COUNT_VIDEO_QUESTION = "In how many frames does a red disc appear?"
COLORS_QUESTION = "Which colors are the discs, from left to right?"
COLORS_VIDEO_QUESTION = "Which color is the disc in each frame, in order?"
#: well-separated colours (names are single BPE tokens); yellow+blue and red+green average to greys and browns
PALETTE = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 80, 220), "yellow": (235, 200, 20), "black": (20, 20, 20)}


@dataclass
class Sample:
    """One generated example: still image or video frames, a question and the answer."""

    question: str
    answer: str
    image: Image.Image | None = None
    frames: list[Image.Image] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Context:
    spec: TaskSpec
    rng: np.random.Generator
    base_dir: Path
    sources: dict[str, str] = field(default_factory=dict)
    backgrounds: list[Image.Image] = field(default_factory=list)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def task_key(spec: TaskSpec) -> str:
    """Folder name of a generated task: kind, media and a hash of every field."""
    blob = json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()
    return f"{spec.kind}-{spec.media}-{hashlib.sha256(blob).hexdigest()[:10]}"


# --------------------------------------------------------------------------- canvases
def _paper(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A light, slightly noisy page: real scans are never flat white."""
    tint = rng.integers(215, 256, size=3)
    noise = rng.normal(0.0, 5.0, size=(h, w, 1))
    arr = np.clip(tint[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _photo(ctx: _Context, w: int, h: int) -> Image.Image:
    """A random crop of a real photo, washed towards white so the marks stay the salient thing."""
    src = ctx.backgrounds[int(ctx.rng.integers(len(ctx.backgrounds)))]
    scale = float(ctx.rng.uniform(0.35, 1.0))
    cw = max(8, min(src.width, int(src.width * scale)))
    ch = max(8, min(src.height, int(cw * h / w)))
    x = int(ctx.rng.integers(0, src.width - cw + 1))
    y = int(ctx.rng.integers(0, src.height - ch + 1))
    crop = np.asarray(src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    washed = 0.45 * crop + 0.55 * 235.0
    return Image.fromarray(washed.astype(np.uint8), "RGB")


def _disc(draw: ImageDraw.ImageDraw, cx: float, cy: float, rad: float, color=RED) -> None:
    draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=color, outline=(255, 255, 255), width=1)


def _square(draw: ImageDraw.ImageDraw, cx: float, cy: float, rad: float, color) -> None:
    draw.rectangle((cx - rad, cy - rad, cx + rad, cy + rad), fill=tuple(int(c) for c in color))


def _slots(rng: np.random.Generator, w: int, h: int, n: int, side: int = 4) -> tuple[np.ndarray, np.ndarray, float]:
    """n non-overlapping jittered positions on a side x side lattice, and a radius that keeps them apart."""
    if n > side * side:
        side = int(np.ceil(np.sqrt(n)))
    cw, ch = w / side, h / side
    rad = 0.3 * min(cw, ch)
    pick = rng.choice(side * side, size=n, replace=False)
    jitter = rng.uniform(-0.12, 0.12, size=(n, 2))
    cx = (pick % side + 0.5 + jitter[:, 0]) * cw
    cy = (pick // side + 0.5 + jitter[:, 1]) * ch
    return cx, cy, rad


# --------------------------------------------------------------------------- read
def _render_text(ctx: _Context, text: str, w: int, h: int) -> tuple[Image.Image, int]:
    lo, hi = ctx.spec.font_size
    size = int(ctx.rng.integers(lo, hi + 1))
    img = _paper(ctx.rng, w, h)
    draw = ImageDraw.Draw(img)
    while True:
        font = _font(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        if (tw <= w - 2 and th <= h - 2) or size <= 6:
            break
        size -= 1
    x = int(ctx.rng.integers(0, max(1, w - tw))) - left
    y = int(ctx.rng.integers(0, max(1, h - th))) - top
    ink = tuple(int(v) for v in ctx.rng.integers(0, 90, size=3))
    draw.text((x, y), text, fill=ink, font=font)
    return img, size


def _read(ctx: _Context, n: int) -> list[Sample]:
    text, desc = load_text(ctx.spec.text, ctx.base_dir)
    ctx.sources["text"] = desc
    words = words_of(text)
    spec = ctx.spec
    if spec.media == "video":
        snippets = sample_snippets(words, n, spec.frames, spec.max_chars, ctx.rng)
        out = []
        for snip in snippets:
            frames, sizes = [], []
            for word in snip.split(" "):
                img, size = _render_text(ctx, word, spec.width, spec.height)
                frames.append(img)
                sizes.append(size)
            out.append(Sample(READ_VIDEO_QUESTION, snip, frames=frames, meta={"font_size": sizes, "words": len(frames)}))
        return out
    snippets = sample_snippets(words, n, spec.max_words, spec.max_chars, ctx.rng)
    out = []
    for snip in snippets:
        img, size = _render_text(ctx, snip, spec.width, spec.height)
        out.append(Sample(READ_QUESTION, snip, image=img, meta={"font_size": size, "chars": len(snip)}))
    return out


# --------------------------------------------------------------------------- locate
def _locate(ctx: _Context, n: int) -> list[Sample]:
    ctx.backgrounds, ctx.sources["backgrounds"] = load_backgrounds(ctx.spec.backgrounds, ctx.base_dir)
    spec, rng = ctx.spec, ctx.rng
    k = spec.regions
    cw, ch = spec.width / k, spec.height / k
    cells = rng.integers(0, k * k, size=n)
    n_distract = rng.integers(0, 3, size=n)
    out = []
    for i in range(n):
        img = _photo(ctx, spec.width, spec.height)
        draw = ImageDraw.Draw(img)
        row, col = divmod(int(cells[i]), k)
        rad = float(rng.uniform(0.15, 0.3)) * min(cw, ch)
        cx = (col + rng.uniform(0.0, 1.0)) * cw
        cy = (row + rng.uniform(0.0, 1.0)) * ch
        cx = float(np.clip(cx, col * cw + rad, (col + 1) * cw - rad))
        cy = float(np.clip(cy, row * ch + rad, (row + 1) * ch - rad))
        for _ in range(int(n_distract[i])):
            color = DISTRACTOR_COLORS[int(rng.integers(len(DISTRACTOR_COLORS)))]
            _square(draw, rng.uniform(0, spec.width), rng.uniform(0, spec.height), rad * 0.8, color)
        _disc(draw, cx, cy, rad)
        out.append(Sample(LOCATE_QUESTION, f"row {row + 1} col {col + 1}", image=img, meta={"row": row + 1, "col": col + 1}))
    return out


# --------------------------------------------------------------------------- count
def _count_image(ctx: _Context) -> tuple[Image.Image, int]:
    spec, rng = ctx.spec, ctx.rng
    k = int(rng.integers(1, spec.max_count + 1))
    m = int(rng.integers(0, 4))
    img = _photo(ctx, spec.width, spec.height)
    draw = ImageDraw.Draw(img)
    cx, cy, rad = _slots(rng, spec.width, spec.height, k + m)
    for j in range(k + m):
        if j < k:
            _disc(draw, cx[j], cy[j], rad)
        else:
            _square(draw, cx[j], cy[j], rad * 0.8, DISTRACTOR_COLORS[int(rng.integers(len(DISTRACTOR_COLORS)))])
    return img, k


def _count(ctx: _Context, n: int) -> list[Sample]:
    ctx.backgrounds, ctx.sources["backgrounds"] = load_backgrounds(ctx.spec.backgrounds, ctx.base_dir)
    spec, rng = ctx.spec, ctx.rng
    out = []
    if spec.media == "video":
        for _ in range(n):
            shows = rng.random(spec.frames) < 0.5
            frames = []
            for has in shows:
                img = _photo(ctx, spec.width, spec.height)
                draw = ImageDraw.Draw(img)
                cx, cy, rad = _slots(rng, spec.width, spec.height, 2, side=3)
                if has:
                    _disc(draw, cx[0], cy[0], rad)
                _square(draw, cx[1], cy[1], rad * 0.8, DISTRACTOR_COLORS[int(rng.integers(len(DISTRACTOR_COLORS)))])
                frames.append(img)
            out.append(Sample(COUNT_VIDEO_QUESTION, str(int(shows.sum())), frames=frames, meta={"count": int(shows.sum())}))
        return out
    for _ in range(n):
        img, k = _count_image(ctx)
        out.append(Sample(COUNT_QUESTION, str(k), image=img, meta={"count": k}))
    return out


# --------------------------------------------------------------------------- colors
def _radius(ctx: _Context, cell: float) -> float:
    """A disc radius in ``mark_px`` (or 15-30% of the cell), never wider than the cell it must fit in."""
    lo, hi = ctx.spec.mark_px if ctx.spec.mark_px else (0.15 * cell, 0.3 * cell)
    return min(float(ctx.rng.uniform(lo, hi)), max(1.0, cell / 2 - 1))


def _canvas(ctx: _Context, w: int, h: int) -> Image.Image:
    return _paper(ctx.rng, w, h) if ctx.spec.backgrounds == "paper" else _photo(ctx, w, h)


def _colors(ctx: _Context, n: int) -> list[Sample]:
    if ctx.spec.backgrounds == "paper":  # blank noisy pages: the disc is the only thing to find
        ctx.sources["backgrounds"] = "generated paper"
    else:
        ctx.backgrounds, ctx.sources["backgrounds"] = load_backgrounds(ctx.spec.backgrounds, ctx.base_dir)
    spec, rng = ctx.spec, ctx.rng
    names = list(PALETTE)
    out = []
    for _ in range(n):
        if spec.media == "video":  # 1..frames frames, one disc each, anywhere in the frame
            k = int(rng.integers(1, spec.frames + 1))
            picks = rng.integers(len(names), size=k)
            frames = []
            for c in picks:
                img = _canvas(ctx, spec.width, spec.height)
                rad = _radius(ctx, min(spec.width, spec.height))
                cx, cy = rng.uniform(rad, spec.width - rad), rng.uniform(rad, spec.height - rad)
                _disc(ImageDraw.Draw(img), cx, cy, rad, PALETTE[names[c]])
                frames.append(img)
            answer = " ".join(names[c] for c in picks)
            out.append(Sample(COLORS_VIDEO_QUESTION, answer, frames=frames, meta={"discs": k}))
            continue
        k = int(rng.integers(1, spec.max_count + 1))  # k discs in k of max_count columns, read left to right
        cols = np.sort(rng.choice(spec.max_count, size=k, replace=False))
        picks = rng.integers(len(names), size=k)
        cw = spec.width / spec.max_count
        img = _canvas(ctx, spec.width, spec.height)
        draw = ImageDraw.Draw(img)
        for col, c in zip(cols, picks):
            rad = _radius(ctx, min(cw, spec.height))
            cx = float(np.clip((col + rng.uniform(0, 1)) * cw, col * cw + rad, (col + 1) * cw - rad))
            cy = float(rng.uniform(rad, spec.height - rad))
            _disc(draw, cx, cy, rad, PALETTE[names[c]])
        out.append(Sample(COLORS_QUESTION, " ".join(names[c] for c in picks), image=img, meta={"discs": k}))
    return out


GENERATORS: dict[str, Callable[[_Context, int], list[Sample]]] = {
    "read": _read, "locate": _locate, "count": _count, "colors": _colors,
}


# --------------------------------------------------------------------------- writing
def _jpeg(img: Image.Image) -> bytes:
    """JPEG at quality 92: noisy paper and photo backgrounds would make PNG manifests several times larger."""
    return encode_image(img, "JPEG", quality=92)


def write_video(frames: list[Image.Image], path: Path, fps: float = VIDEO_FPS) -> None:
    """H.264 (near-lossless, every frame a keyframe) at ``fps``: one generated frame per second of video."""
    encode_video(path, frames, fps=int(fps), codec="libx264", options={"crf": "12", "preset": "veryfast", "g": "1"})


def _rows(samples: list[Sample], spec: TaskSpec, start: int, media_dir: Path) -> pa.Table:
    source = f"ablate-{spec.kind}{'-video' if spec.media == 'video' else ''}"
    ids, media, texts, turns, metas, modality = [], [], [], [], [], []
    for j, s in enumerate(samples):
        i = start + j
        split = "train" if i < spec.train else "val"
        if s.image is not None:
            ref = {"uri": None, "bytes": _jpeg(s.image), "kind": "image", "format": "JPEG", "width": s.image.width, "height": s.image.height}
            modality.append("image_text")
        else:
            path = media_dir / f"{i:06d}.mp4"
            write_video(s.frames, path)
            w, h = s.frames[0].size
            ref = {
                "uri": str(path), "bytes": None, "kind": "video", "format": "mp4", "width": w - w % 2, "height": h - h % 2,
                "duration": len(s.frames) / VIDEO_FPS, "fps": VIDEO_FPS, "frames": len(s.frames),
            }
            modality.append("video")
        ids.append(make_id(source, f"{spec.seed}:{i}"))
        media.append([ref])
        texts.append(s.answer)
        turns.append([{"role": "user", "content": s.question}, {"role": "assistant", "content": s.answer}])
        metas.append(json.dumps({"split": split, "task": spec.kind, **s.meta}))
    return pa.table(
        {
            "id": ids, "source": [source] * len(ids), "modality": modality, "media": media,
            "text": texts, "turns": turns, "meta": metas,
        },
        schema=CORE_SCHEMA,
    )


def generate_task(spec: TaskSpec, base_dir: Path, data_root: Path, chunk: int = 256) -> Path:
    """Write (or reuse) the manifest of a built-in task under ``data_root``; returns its folder."""
    if spec.kind not in GENERATORS:
        raise RecipeError(f"{spec.kind!r} is not a built-in generator", field="task.kind")
    dest = data_root / task_key(spec)
    if (dest / "manifest.json").is_file():
        return dest
    from manifests.writer import ManifestWriter

    ctx = _Context(spec=spec, rng=np.random.default_rng(spec.seed), base_dir=base_dir)
    samples = GENERATORS[spec.kind](ctx, spec.train + spec.val)
    writer = ManifestWriter(dest, CORE_SCHEMA, overwrite=True)
    for start in range(0, len(samples), chunk):
        writer.write(_rows(samples[start : start + chunk], spec, start, dest / "media"))
    writer.commit(recipe={"task": spec.model_dump(mode="json")}, extra={"ablation_task": {"kind": spec.kind, "sources": ctx.sources}})
    return dest
