"""`smolcurate demo`: build a small mixed corpus offline, write its recipe, curate it on the embedded Ray.

Everything is generated from installed packages: photo-like images drawn with
numpy/PIL, document pages typeset with PIL's scalable default font, PDFs with a
real text layer written by hand, short videos encoded with PyAV, and text from
the docstrings of Python's standard library. Realistic flaws are planted on
purpose (see ``FLAWS`` and docs/curation.md).
"""
from __future__ import annotations

import importlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation import synth

#: what each planted flaw is and how curation should account for it
FLAWS = {
    "images/broken/truncated.jpg": "truncated JPEG -> ledger decode/truncated",
    "images/broken/empty.png": "zero-byte file -> ledger read/zero_bytes",
    "images/broken/noise.jpg": "random bytes with a .jpg name -> ledger decode/undecodable",
    "images/tiny.png": "16x16 image -> ledger filter/min_side",
    "images/flat.png": "a constant colour -> ledger filter/max_low_info",
    "images/photos/photo_03_copy.jpg": "resized, re-compressed copy of photo_03 -> near-duplicate (dedup)",
    "images/more/photo_05.png": "byte copy of photos/photo_05.png in another folder -> exact duplicate (dedup)",
    "pairs/captions.jsonl:line 19": "a line that is not JSON -> ledger read/invalid_json",
    "pairs/captions.jsonl:line 20": "an empty caption -> ledger filter/min_chars",
    "docs/broken.pdf": "a PDF cut in half -> ledger decode/undecodable",
    "docs/locked.pdf": "a password-protected PDF -> ledger decode/encrypted",
    "docs/scan.pdf": "a scanned page with no text layer -> kept, score_textless_pages = 1",
    "text/notes.jsonl:spam": "one sentence repeated -> ledger filter (repetition)",
    "text/notes.jsonl:short": "too short -> ledger filter/min_chars",
    "text/notes.jsonl:latin1": "a line in Latin-1, not UTF-8 -> ledger read/invalid_utf8",
    "videos/still.mp4": "a video that never moves -> ledger filter/min_motion",
    "videos/pan.avi": "the same clip as pan.mp4 in another container -> near-duplicate (dedup)",
    "videos/broken.mp4": "an mp4 cut after its first kilobytes -> ledger decode/undecodable",
}

_STDLIB_DOCS = (
    "argparse", "asyncio", "bisect", "calendar", "csv", "dataclasses", "decimal", "difflib", "email", "fractions",
    "functools", "getopt", "gettext", "heapq", "hmac", "http.cookies", "inspect", "ipaddress", "json", "locale",
    "logging", "mailbox", "optparse", "pickle", "pickletools", "pprint", "pydoc", "random", "sched", "secrets",
    "shlex", "shutil", "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "tokenize", "trace", "typing", "unittest", "uuid", "warnings", "weakref", "zipfile",
)

_CAPTION_WORDS = ["a", "bright", "textured", "scene", "with", "shapes", "and", "soft", "colour", "gradients",
                  "seen", "from", "above", "in", "daylight", "some", "circles", "rectangles", "on", "background"]


def _texts() -> list[tuple[str, str]]:
    """(module, docstring) of standard-library modules: real English prose available offline."""
    out = []
    for name in _STDLIB_DOCS:
        try:
            doc = importlib.import_module(name).__doc__
        except Exception:  # pragma: no cover - a module missing from a trimmed Python
            continue
        if doc and len(doc.split()) >= 20:
            out.append((name, doc.strip()))
    return out


def _jpeg_bytes(img: Image.Image, quality: int = 88) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def build_corpus(root: str | Path, *, scale: int = 1) -> dict[str, Any]:
    """Write the demo corpus under ``root``; ``scale`` multiplies the number of clean samples."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(0)
    counts: dict[str, int] = {}

    # images
    photos = root / "images" / "photos"
    photos.mkdir(parents=True)
    n_photos = 12 * scale
    for i in range(n_photos):
        size = (int(rng.integers(240, 480)), int(rng.integers(200, 360)))
        img = synth.photo_like(100 + i, size)
        if i % 3 == 2:
            img.save(photos / f"photo_{i:02d}.png")
        elif i % 3 == 1:
            img.save(photos / f"photo_{i:02d}.webp", quality=85)
        else:
            (photos / f"photo_{i:02d}.jpg").write_bytes(_jpeg_bytes(img))
    original = synth.photo_like(103, (420, 300))
    (photos / "photo_03.jpg").write_bytes(_jpeg_bytes(original))
    (photos / "photo_03_copy.jpg").write_bytes(_jpeg_bytes(original.resize((300, 214)), quality=70))
    (root / "images" / "more").mkdir()
    shutil.copyfile(photos / "photo_05.png", root / "images" / "more" / "photo_05.png")
    synth.blurred(synth.photo_like(7, (320, 240)), 5).save(root / "images" / "more" / "soft_focus.jpg")
    synth.photo_like(8, (16, 16)).save(root / "images" / "tiny.png")
    synth.flat((30, 110, 190), (200, 150)).save(root / "images" / "flat.png")
    broken = root / "images" / "broken"
    broken.mkdir()
    data = _jpeg_bytes(synth.photo_like(9, (400, 300)))
    (broken / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (broken / "empty.png").write_bytes(b"")
    (broken / "noise.jpg").write_bytes(rng.bytes(5000))
    counts["images"] = sum(1 for p in (root / "images").rglob("*") if p.is_file())

    # image-text pairs: captions.jsonl next to its images
    pairs = root / "pairs"
    (pairs / "img").mkdir(parents=True)
    lines = []
    for i in range(18 * scale):
        name = f"img/pair_{i:03d}.jpg"
        (pairs / name).write_bytes(_jpeg_bytes(synth.photo_like(500 + i, (256, 192))))
        words = rng.choice(_CAPTION_WORDS, size=int(rng.integers(5, 14)))
        lines.append(json.dumps({"image": name, "text": " ".join(words).capitalize() + ".", "license": "CC0-1.0"}))
    lines.insert(18, '{"image": "img/pair_000.jpg", "text": "unterminated')
    lines.insert(19, json.dumps({"image": "img/pair_001.jpg", "text": "", "license": "CC0-1.0"}))
    (pairs / "captions.jsonl").write_text("\n".join(lines) + "\n")
    counts["pairs"] = len(lines)

    # documents: text PDFs, a scan, document images with sidecar text, broken ones
    docs = root / "docs"
    docs.mkdir()
    texts = _texts()
    for i in range(4 * scale):
        pages = [texts[(i * 3 + k) % len(texts)][1][:1800] for k in range(1 + i % 3)]
        synth.write_text_pdf(docs / f"report_{i:02d}.pdf", pages)
    synth.write_image_pdf(docs / "scan.pdf", [synth.text_page(texts[5][1][:900], size=(612, 792), font_size=16)], dpi=72)
    for i in range(2):
        body = texts[10 + i][1][:700]
        synth.text_page(body, size=(850, 1100)).save(docs / f"page_{i}.png")
        (docs / f"page_{i}.txt").write_text(body)
    good = (docs / "report_00.pdf").read_bytes()
    (docs / "broken.pdf").write_bytes(good[: len(good) // 2])
    synth.write_locked_pdf(docs / "locked.pdf")
    counts["docs"] = sum(1 for p in docs.iterdir() if p.suffix in (".pdf", ".png"))

    # text: stdlib docstrings as JSONL, plus spam, a short line and a Latin-1 line
    text_dir = root / "text"
    text_dir.mkdir()
    rows = [json.dumps({"id": name, "text": doc}) for name, doc in texts[: 30 * scale]]
    rows.append(json.dumps({"id": "spam", "text": " ".join(["Buy cheap watches online today!"] * 60)}))
    rows.append(json.dumps({"id": "short", "text": "Too short."}))
    body = "\n".join(rows).encode() + b"\n" + '{"id": "latin1", "text": "caf\xe9 cr\xe8me"}'.encode("latin-1") + b"\n"
    (text_dir / "notes.jsonl").write_bytes(body)
    counts["text"] = len(rows) + 1

    # videos: a panning scene in three containers, others, a still one, a broken one
    vids = root / "videos"
    vids.mkdir()
    pan = synth.moving_frames(24, (160, 120), seed=1)
    synth.write_video(vids / "pan.mp4", pan, fps=12)
    synth.write_video(vids / "pan.avi", pan, fps=12)
    for i in range(2 * scale):
        synth.write_video(vids / f"clip_{i}.webm" if i % 2 else vids / f"clip_{i}.mkv",
                          synth.moving_frames(20, (160, 120), seed=20 + i), fps=10)
    synth.write_video(vids / "still.mp4", synth.moving_frames(20, (160, 120), seed=3, static=True), fps=10)
    (vids / "broken.mp4").write_bytes((vids / "pan.mp4").read_bytes()[:1500])
    counts["videos"] = sum(1 for _ in vids.iterdir())
    return counts


def recipe_text() -> str:
    """The demo recipe (YAML), relative to the corpus folder: all five source kinds, filters,
    dedup, token counts, and a token-weighted mixture of the result."""
    return """\
# smolcurate demo recipe: paths are relative to this file
seed: 0
sources:
  - {name: photos, kind: images, path: corpus/images}
  - {name: pairs, kind: image_text, path: corpus/pairs/captions.jsonl, image_column: image, text_column: text}
  - {name: docs, kind: document, path: "corpus/docs/*", dpi: 100}
  - {name: notes, kind: text, path: corpus/text/notes.jsonl, text_column: text, id_column: id}
  - {name: clips, kind: video, path: corpus/videos}
filters:
  image: {min_side: 32, max_aspect_ratio: 6, max_low_info: 0.9}
  text: {min_chars: 20}
  image_text: {min_chars: 3}
  video: {min_duration_s: 0.5, max_duration_s: 900, min_motion: 1.0}
dedup:
  exact: true
  image: {max_distance: 6}
  text: {threshold: 0.8}
  video: {max_distance: 8}
tokens: {strategy: smolvlm-256m}
mixture:
  seed: 0
  by: tokens
  strategy: smolvlm-256m
  weights: {docs: 0.4, pairs: 0.15, photos: 0.2, notes: 0.1, clips: 0.15}
  max_epochs: 3
"""


def run_demo(out: str | Path, *, engine: str = "ray", workers: int | None = None, ray_address: str | None = None,
             quiet: bool = False, scale: int = 1):
    """Build the corpus in ``out/corpus``, write ``out/recipe.yaml``, curate into ``out/manifest``.

    Always overwrites: the corpus is rebuilt each time, so any earlier manifest in ``out`` is stale.
    """
    from curation.engine.job import format_summary, run_job, run_recipe_mixture
    from curation.recipe import load_recipe

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = build_corpus(out / "corpus", scale=scale)
    (out / "recipe.yaml").write_text(recipe_text())
    recipe = load_recipe(out / "recipe.yaml")
    if not quiet:
        print(f"demo corpus in {out / 'corpus'}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    # the corpus was just rebuilt (new mtimes): an old manifest or staging area in out/manifest is stale
    result = run_job(recipe, out / "manifest", engine=engine, workers=workers, ray_address=ray_address,  # type: ignore[arg-type]
                     quiet=quiet, overwrite=True)
    print(format_summary(result))
    from curation.mixing import format_shares

    mixed = run_recipe_mixture(recipe, out / "manifest", out / "mixture", overwrite=True)
    print(format_shares(mixed.provenance))
    print(f"next: smolcurate inspect {out / 'manifest'}   (and {out / 'mixture'})")
    return result
