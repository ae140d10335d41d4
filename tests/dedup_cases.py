"""Labelled near-duplicate cases for dedup quality: generated transforms (positives) and hard negatives.

Shared by the quality tests (tests/test_dedup_quality.py) and the benchmark
(benchmarks/bench_dedup_quality.py), so that the figures in the docs and the
assertions in CI come from the same data. Every generator is deterministic
(seeded) and uses only Pillow's bundled font, so no system font is needed.

An image case is ``(id, class, group, encoded bytes)``: two images of the same
``group`` are a true duplicate pair; every other pair is a negative. Hard
negatives are built so that pHash alone calls many of them duplicates
(symbols and charts on a mostly blank canvas).
"""
from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont


@dataclass(frozen=True)
class ImageCase:
    id: str
    cls: str  # what it tests: a transform (positives) or a hard-negative family
    group: str  # same group = duplicates
    data: bytes


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


# ----------------------------------------------------------------------------- transforms (positives)


def _resize(img: Image.Image, f: float) -> Image.Image:
    return img.resize((max(8, round(img.width * f)), max(8, round(img.height * f))), Image.Resampling.LANCZOS)


def _crop(img: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = img.size
    return img.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


def _random_crop(img: Image.Image) -> Image.Image:
    """Up to 10% of each dimension cut, split at random between the two sides (seeded by the size)."""
    rng = random.Random(img.width * 7919 + img.height)
    tx, ty = rng.uniform(0.02, 0.10), rng.uniform(0.02, 0.10)
    left, top = rng.uniform(0, tx), rng.uniform(0, ty)
    return _crop(img, left, top, tx - left, ty - top)


#: transform name -> function(img) -> encoded bytes; each is a duplicate of its source
TRANSFORMS: dict[str, Callable[[Image.Image], bytes]] = {
    "resize_half": lambda im: encode(_resize(im, 0.5), "PNG"),
    "resize_up": lambda im: encode(_resize(im, 1.5), "PNG"),
    "jpeg_q35": lambda im: encode(im, "JPEG", quality=35),
    "webp_q60": lambda im: encode(im.convert("RGB"), "WEBP", quality=60),
    "crop_5pct": lambda im: encode(_crop(im, 0.05, 0.0, 0.0, 0.05), "PNG"),
    "crop_10pct": lambda im: encode(_crop(im, 0.05, 0.05, 0.05, 0.05), "PNG"),
    "crop_random": lambda im: encode(_random_crop(im), "JPEG", quality=90),
    "brighter": lambda im: encode(ImageEnhance.Brightness(im.convert("RGB")).enhance(1.15), "JPEG", quality=90),
    "darker": lambda im: encode(ImageEnhance.Brightness(im.convert("RGB")).enhance(0.85), "JPEG", quality=90),
}


def positives(bases: Iterable[tuple[str, Image.Image]], transforms: Iterable[str] | None = None, cls_prefix: str = "") -> list[ImageCase]:
    """The base (PNG) plus one copy per transform, all in the base's group."""
    names = list(transforms or TRANSFORMS)
    out: list[ImageCase] = []
    for name, img in bases:
        img = img.convert("RGB")
        out.append(ImageCase(f"{name}", "original", name, encode(img, "PNG")))
        for t in names:
            out.append(ImageCase(f"{name}~{t}", cls_prefix + t, name, TRANSFORMS[t](img)))
    return out


def realdata_bases(root: Path, limit: int = 60, max_side: int = 640) -> list[tuple[str, Image.Image]]:
    """Distinct photos and drawings of the real corpus (one per known family), at most `max_side` px."""
    picks: list[Path] = []
    picks += sorted((root / "images" / "imagededup" / "base_images").glob("*.jpg"))
    picks += [p for p in sorted((root / "images" / "skimage").glob("*")) if p.suffix in (".png", ".jpg")
              and p.stem not in ("chessboard_RGB", "motorcycle_right", "multipage_rgb")]
    picks += sorted((root / "images" / "sklearn").glob("*.jpg"))
    g = root / "images" / "gradio" / "media_assets"
    picks += [g / n for n in ("cheetah.jpg", "cheetah1.jpg", "groot.jpeg", "lion.jpg", "tower.jpg")]
    gc = root / "pairs" / "gcompris" / "images"
    rng = random.Random(7)
    extra = sorted((gc / "explore_world_animals").glob("*.webp")) + sorted((gc / "details").glob("*.webp")) \
        + sorted((gc / "louis-braille").glob("*.webp")) + sorted((gc / "lang").glob("*.webp"))
    rng.shuffle(extra)
    picks += extra
    out: list[tuple[str, Image.Image]] = []
    for p in picks:
        if len(out) >= limit:
            break
        try:
            with Image.open(p) as im:
                im.seek(0)
                img = im.convert("RGB")
        except Exception:
            continue
        if min(img.size) < 32:
            continue
        if max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out.append((str(p.relative_to(root)), img))
    return out


# ----------------------------------------------------------------------------- hard negatives


def glyph(ch: str, size: int = 256, scale: float = 0.55, ink=(20, 20, 20), bg=(255, 255, 255)) -> Image.Image:
    """One character centred on a blank canvas, like a clip-art stamp."""
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    f = font(int(size * scale))
    d.text((size / 2, size / 2), ch, fill=ink, font=f, anchor="mm")
    return img


GLYPHS = "0123456789sScCoOxXzZvVwWuUpPkK+-=%#?!"


def division_sign(size: int = 256) -> Image.Image:
    """A drawn division sign with the plus sign's bar (the bundled font has no U+00F7)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    c, w, t, r = size / 2, size * 0.16, size * 0.022, size * 0.035
    d.rectangle((c - w, c - t, c + w, c + t), fill=(20, 20, 20))
    for dy in (-w * 0.65, w * 0.65):
        d.ellipse((c - r, c + dy - r, c + r, c + dy + r), fill=(20, 20, 20))
    return img


def glyph_negatives() -> list[ImageCase]:
    """Letters, digits and signs: the lowercase/uppercase pairs differ only in size."""
    out = [ImageCase(f"glyph-{ord(c):04x}", "glyphs", f"glyph-{ord(c):04x}", encode(glyph(c))) for c in GLYPHS]
    return out + [ImageCase("glyph-00f7", "glyphs", "glyph-00f7", encode(division_sign()))]


def coin(label: str, size: int = 256, rim=(184, 115, 51)) -> Image.Image:
    """A copper coin with a value written on it: coins of different values differ in the numeral only."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    m = size * 0.12
    d.ellipse((m, m, size - m, size - m), fill=rim, outline=(110, 60, 20), width=max(2, size // 40))
    d.ellipse((m * 1.6, m * 1.6, size - m * 1.6, size - m * 1.6), outline=(140, 80, 30), width=max(1, size // 80))
    d.text((size / 2, size * 0.47), label, fill=(90, 45, 10), font=font(int(size * 0.3)), anchor="mm")
    d.text((size / 2, size * 0.68), "CENT", fill=(90, 45, 10), font=font(int(size * 0.07)), anchor="mm")
    return img


def icon(detail: str, size: int = 256) -> Image.Image:
    """A rounded-square app icon; variants differ in one detail (an arrow's direction, a badge, a mark)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    m = size * 0.1
    d.rounded_rectangle((m, m, size - m, size - m), radius=size // 8, fill=(40, 110, 200))
    c = size / 2
    w = size * 0.22
    white = (255, 255, 255)
    if detail in ("left", "right", "up", "down"):
        sgn = {"left": -1, "right": 1, "up": -1, "down": 1}[detail]
        if detail in ("left", "right"):
            d.rectangle((c - w, c - w * 0.18, c + w, c + w * 0.18), fill=white)
            tip = c + sgn * w * 1.2
            d.polygon([(tip, c), (c + sgn * w * 0.4, c - w * 0.6), (c + sgn * w * 0.4, c + w * 0.6)], fill=white)
        else:
            d.rectangle((c - w * 0.18, c - w, c + w * 0.18, c + w), fill=white)
            tip = c + sgn * w * 1.2
            d.polygon([(c, tip), (c - w * 0.6, c + sgn * w * 0.4), (c + w * 0.6, c + sgn * w * 0.4)], fill=white)
    elif detail == "check":
        d.line([(c - w, c), (c - w * 0.2, c + w * 0.8), (c + w, c - w * 0.8)], fill=white, width=size // 14)
    elif detail == "cross":
        d.line([(c - w, c - w), (c + w, c + w)], fill=white, width=size // 14)
        d.line([(c - w, c + w), (c + w, c - w)], fill=white, width=size // 14)
    elif detail in ("badge", "plain"):
        d.ellipse((c - w, c - w, c + w, c + w), outline=white, width=size // 20)
        if detail == "badge":
            d.ellipse((size - m - w * 0.9, m - w * 0.1, size - m + w * 0.1, m + w * 0.9), fill=(220, 40, 40))
    return img


def emblem(letter: str, size: int = 256) -> Image.Image:
    """A dreidel-like outline bearing one letter: variants differ in the letter only."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    s = size
    d.polygon([(s * 0.3, s * 0.25), (s * 0.7, s * 0.25), (s * 0.7, s * 0.7), (s * 0.5, s * 0.9), (s * 0.3, s * 0.7)],
              fill=(70, 90, 200), outline=(20, 30, 90))
    d.rectangle((s * 0.46, s * 0.08, s * 0.54, s * 0.25), fill=(20, 30, 90))
    d.text((s * 0.5, s * 0.5), letter, fill=(255, 230, 80), font=font(int(s * 0.25)), anchor="mm")
    return img


def detail_negatives() -> list[ImageCase]:
    out = [ImageCase(f"coin-{v}", "coins", f"coin-{v}", encode(coin(v))) for v in ("1", "2", "5", "10", "25", "50")]
    out += [ImageCase(f"icon-{v}", "icons", f"icon-{v}", encode(icon(v)))
            for v in ("left", "right", "up", "down", "check", "cross", "badge", "plain")]
    out += [ImageCase(f"emblem-{v}", "emblems", f"emblem-{v}", encode(emblem(v))) for v in "NGHPAEKX"]
    return out


def _words(rng: random.Random, n: int) -> str:
    vocab = ("the of data model image text train set loss value table chart page line video frame token batch "
             "layer score curve sample mean rate time size cost user file").split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def document(lines: list[str], size=(600, 800)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    f = font(22)
    y = 50
    for line in lines:
        d.text((50, y), line, fill=(0, 0, 0), font=f)
        y += 34
    return img


def document_negatives(n_docs: int = 3, variants: int = 3, seed: int = 3) -> list[ImageCase]:
    """Text pages that differ from each other in a single line (another sentence, or one line missing)."""
    rng = random.Random(seed)
    out: list[ImageCase] = []
    for k in range(n_docs):
        lines = [_words(rng, rng.randint(5, 8)) for _ in range(18)]
        out.append(ImageCase(f"doc{k}-v0", "documents", f"doc{k}-v0", encode(document(lines))))
        for v in range(1, variants + 1):
            alt = list(lines)
            i = rng.randrange(len(alt))
            alt[i] = _words(rng, rng.randint(5, 8)) if v % 2 else ""
            out.append(ImageCase(f"doc{k}-v{v}", "documents", f"doc{k}-v{v}", encode(document(alt))))
    return out


def bar_chart(values: list[float], size=(480, 360), color=(60, 120, 200)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    w, h = size
    x0, y0, x1, y1 = 50, 30, w - 20, h - 40
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0), width=2)
    for t in range(1, 5):
        y = y1 - (y1 - y0) * t / 5
        d.line([(x0 - 5, y), (x0, y)], fill=(0, 0, 0), width=1)
    bw = (x1 - x0) / len(values)
    for i, v in enumerate(values):
        d.rectangle((x0 + i * bw + bw * 0.2, y1 - (y1 - y0) * v, x0 + (i + 1) * bw - bw * 0.2, y1), fill=color)
    return img


def line_chart(values: list[float], size=(480, 360)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    w, h = size
    x0, y0, x1, y1 = 50, 30, w - 20, h - 40
    d.line([(x0, y0), (x0, y1), (x1, y1)], fill=(0, 0, 0), width=2)
    pts = [(x0 + (x1 - x0) * i / (len(values) - 1), y1 - (y1 - y0) * v) for i, v in enumerate(values)]
    d.line(pts, fill=(200, 60, 60), width=3)
    return img


def chart_negatives(seed: int = 5) -> list[ImageCase]:
    """Bar and line charts of the same layout whose data differ in one or two values."""
    rng = random.Random(seed)
    out: list[ImageCase] = []
    for k in range(3):
        vals = [rng.uniform(0.2, 0.95) for _ in range(6)]
        for v in range(3):
            alt = list(vals)
            if v:
                for i in rng.sample(range(6), v):
                    alt[i] = max(0.1, min(0.98, alt[i] + rng.choice((-1, 1)) * rng.uniform(0.25, 0.4)))
            out.append(ImageCase(f"bar{k}-v{v}", "charts", f"bar{k}-v{v}", encode(bar_chart(alt))))
        pts = [rng.uniform(0.2, 0.9) for _ in range(8)]
        for v in range(3):
            alt = list(pts)
            if v:
                for i in rng.sample(range(8), v):
                    alt[i] = max(0.05, min(0.98, alt[i] + rng.choice((-1, 1)) * rng.uniform(0.3, 0.45)))
            out.append(ImageCase(f"line{k}-v{v}", "charts", f"line{k}-v{v}", encode(line_chart(alt))))
    return out


def hard_negatives() -> list[ImageCase]:
    return glyph_negatives() + detail_negatives() + document_negatives() + chart_negatives()


#: hard negatives whose transformed copies are positives (strict rules must not lose them)
GRAPHIC_POSITIVES = ("glyph-0053", "glyph-0073", "glyph-002b", "coin-5", "icon-check", "emblem-N", "bar0-v0", "line1-v0", "doc0-v0")


def graphic_positives(negatives: list[ImageCase], transforms: Iterable[str] | None = None) -> list[ImageCase]:
    """Transformed copies of some hard negatives, in the negative's own group (class ``graphic_<transform>``)."""
    out: list[ImageCase] = []
    for c in negatives:
        if c.id in GRAPHIC_POSITIVES:
            with Image.open(io.BytesIO(c.data)) as im:
                img = im.convert("RGB")
            out += [x for x in positives([(c.group, img)], transforms, cls_prefix="graphic_") if x.cls != "original"]
    return out


def labelled_pairs(cases: list[ImageCase]) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """(true pairs, class of each true pair): every two members of a group."""
    groups: dict[str, list[ImageCase]] = {}
    for c in cases:
        groups.setdefault(c.group, []).append(c)
    truth: set[tuple[str, str]] = set()
    cls: dict[tuple[str, str], str] = {}
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                key = tuple(sorted((a.id, b.id)))
                truth.add(key)
                cls[key] = b.cls if a.cls == "original" else a.cls
    return truth, cls


def image_rows(cases: list[ImageCase]):
    """A manifest-shaped table of the cases (media as embedded bytes)."""
    import pyarrow as pa

    from manifests.schema import MEDIA_TYPE, TURN_TYPE

    n = len(cases)
    return pa.table(
        {
            "id": [c.id for c in cases],
            "source": ["cases"] * n,
            "modality": ["image"] * n,
            "media": pa.array([[{"bytes": c.data, "kind": "image"}] for c in cases], pa.list_(MEDIA_TYPE)),
            "text": pa.nulls(n, pa.string()),
            "turns": pa.nulls(n, pa.list_(TURN_TYPE)),
        }
    )


def rgb_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- videos


def _decode_all(src: Path, max_side: int = 320) -> tuple[list[np.ndarray], float]:
    """Every frame of a video (RGB, longer side at most ``max_side``) and its frame rate."""
    import av

    frames = []
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for f in c.decode(stream):
            img = f.to_image()
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side))
            frames.append(np.asarray(img.convert("RGB")))
    return frames, fps


def encode_video(frames: list[np.ndarray], dst: Path, fps: float, codec: str = "libx264") -> Path:
    """Encode RGB frames at ``fps`` (even sizes, yuv420p)."""
    import av
    from fractions import Fraction

    h, w = frames[0].shape[:2]
    h, w = h // 2 * 2, w // 2 * 2
    with av.open(str(dst), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            s.options = {"crf": "28", "preset": "ultrafast"}
        for arr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return dst


def remux(src: Path, dst: Path) -> Path:
    """Copy the video packets into another container (no decode, same frames)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        vin = i.streams.video[0]
        vout = o.add_stream_from_template(vin)
        for pkt in i.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            o.mux(pkt)
    return dst


def video_cases(sources: list[Path], out: Path, groups: list[str] | None = None) -> list[tuple[str, str, str, Path]]:
    """(id, class, group, path): per source a re-encode, its re-mux into MKV, the same frames at another fps
    (metadata only: other timestamps and duration), a re-encode at half the frame rate, copies with 10% trimmed
    at the start or at the end; and two clips that share a scene (the first 60% and the last 60%: a third
    of each is the same footage), which are distinct from each other."""
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for k, src in enumerate(sources):
        g = f"v{k}"
        group = groups[k] if groups else g  # the copies' group (the source's own family, when it is in the set)
        frames, fps = _decode_all(src)
        n = len(frames)
        base = encode_video(frames, out / f"{g}.mp4", fps)
        cases.append((g, "reencode", group, base))
        cases.append((f"{g}~remux", "remux", group, remux(base, out / f"{g}-remux.mkv")))
        other = 23.976 if abs(fps - 30) < 1 else 30.0
        cases.append((f"{g}~fps_metadata", "fps_metadata", group, encode_video(frames, out / f"{g}-fps.mp4", other)))
        cases.append((f"{g}~half_fps", "reencode_half_fps", group, encode_video(frames[::2], out / f"{g}-half.mp4", fps / 2, "mpeg4")))
        cut = max(1, n // 10)
        cases.append((f"{g}~trim_start", "trim_start", group, encode_video(frames[cut:], out / f"{g}-trim-start.mp4", fps)))
        cases.append((f"{g}~trim_end", "trim_end", group, encode_video(frames[:-cut], out / f"{g}-trim-end.mp4", fps)))
        a, b = int(n * 0.6), int(n * 0.4)
        cases.append((f"{g}-scene-a", "shared_scene", f"{g}-scene-a", encode_video(frames[:a], out / f"{g}-scene-a.mp4", fps)))
        cases.append((f"{g}-scene-b", "shared_scene", f"{g}-scene-b", encode_video(frames[b:], out / f"{g}-scene-b.mp4", fps)))
    return cases
