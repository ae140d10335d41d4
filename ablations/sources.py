"""Real text and real images for the diagnostic task generators.

The generators need real document text (for ``read``) and real photographs
(backgrounds for ``locate``/``count``) without assuming any corpus is on the
user's disk. A grid may name a source; otherwise the fallback is what every
installation has: the licence texts shipped in installed packages'
``*.dist-info`` folders, and the sample images shipped inside installed
packages (matplotlib's sample data, scikit-image or scikit-learn images when
present). The fallback content depends on the installed versions, which the
generated manifest records.
"""
from __future__ import annotations

import json
import re
import sys
import sysconfig
from pathlib import Path

import numpy as np
from PIL import Image

from manifests.errors import RecipeError
from media import IMAGE_EXTENSIONS

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\-]*[A-Za-z0-9]|[A-Za-z]")
_LICENCE_NAMES = ("LICENSE", "LICENCE", "COPYING", "NOTICE")
#: backgrounds are cropped and resized to a few hundred pixels; a cap keeps 64 camera photos from taking gigabytes
BACKGROUND_MAX_SIDE = 1024


def _site_dirs() -> list[Path]:
    dirs = {Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])}
    dirs.update(Path(p) for p in sys.path if p.endswith("site-packages"))
    return sorted(d for d in dirs if d.is_dir())


def installed_licence_files() -> list[Path]:
    """Licence texts of installed distributions, sorted by path so the choice is deterministic."""
    found: set[Path] = set()
    for site in _site_dirs():
        for info in site.glob("*.dist-info"):
            for path in info.rglob("*"):
                if path.is_file() and path.name.upper().startswith(_LICENCE_NAMES):
                    found.add(path)
    return sorted(found)


def load_text(source: str | None, base_dir: Path) -> tuple[str, str]:
    """(text, description) from a .txt file, a .jsonl with ``text`` fields, a manifest's text column, or installed licences."""
    if source in (None, "auto", "installed-licences"):
        files = installed_licence_files()
        if not files:
            raise RecipeError("no text source given and no licence texts found in installed packages", field="task.text")
        chunks = [p.read_text(errors="ignore") for p in files]
        return "\n".join(chunks), f"installed licence texts ({len(files)} files)"
    path = Path(source)
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    if path.is_dir():
        from manifests.reader import open_manifest

        m = open_manifest(path)
        col = m.table(columns=["text"]).column("text").drop_null().to_pylist()
        if not col:
            raise RecipeError(f"manifest {path} has no text rows", field="task.text")
        return "\n".join(col), f"text column of manifest {path}"
    if not path.is_file():
        raise RecipeError(f"text source {path} does not exist", field="task.text")
    if path.suffix == ".jsonl":
        texts = []
        with path.open(errors="ignore") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    raise RecipeError(f"{path}: a line is not JSON", field="task.text") from None
                if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                    texts.append(obj["text"])
        if not texts:
            raise RecipeError(f"{path}: no objects with a text field", field="task.text")
        return "\n".join(texts), f"{path.name} ({len(texts)} texts)"
    return path.read_text(errors="ignore"), path.name


def words_of(text: str) -> np.ndarray:
    """The words of a text (letters, digits, inner apostrophes/hyphens) as a numpy string array."""
    words = _WORD.findall(text)
    if not words:
        raise RecipeError("the text source has no words", field="task.text")
    return np.array(words)


def sample_snippets(words: np.ndarray, n: int, max_words: int, max_chars: int, rng: np.random.Generator) -> list[str]:
    """n snippets of 1..max_words consecutive words, each at most max_chars long, drawn without a per-try Python loop."""
    lengths = np.char.str_len(words)
    csum = np.concatenate([[0], np.cumsum(lengths)])
    out: list[str] = []
    for _ in range(64):  # rejection rounds, each fully vectorized
        need = n - len(out)
        if need <= 0:
            break
        k = need * 4
        count = rng.integers(1, max_words + 1, size=k)
        start = rng.integers(0, max(1, len(words) - max_words), size=k)
        end = np.minimum(start + count, len(words))
        chars = csum[end] - csum[start] + (end - start - 1)
        ok = np.flatnonzero(chars <= max_chars)[:need]
        out.extend(" ".join(words[s:e]) for s, e in zip(start[ok], end[ok]))
    if len(out) < n:
        raise RecipeError(f"could not find {n} snippets of at most {max_chars} characters in the text source", field="task.max_chars")
    return out


def installed_images() -> list[Path]:
    """Sample photographs shipped with installed packages (matplotlib, scikit-image, scikit-learn)."""
    found: set[Path] = set()
    for site in _site_dirs():
        for folder in ("matplotlib/mpl-data/sample_data", "skimage/data", "sklearn/datasets/images"):
            d = site / folder
            if d.is_dir():
                found.update(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.stat().st_size > 20_000)
    return sorted(found)


def load_backgrounds(source: str | None, base_dir: Path, limit: int = 64) -> tuple[list[Image.Image], str]:
    """RGB images to crop backgrounds from: a folder of images, an image manifest, or installed sample images."""
    if source in (None, "auto"):
        paths = installed_images()
        desc = f"images shipped in installed packages ({len(paths)})"
    else:
        path = Path(source)
        if not path.is_absolute():
            path = (base_dir / path).resolve()
        if (path / "manifest.json").is_file():
            return _manifest_images(path, limit)
        if not path.is_dir():
            raise RecipeError(f"background source {path} is not a folder or manifest", field="task.backgrounds")
        paths = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        desc = f"images under {path} ({len(paths)})"
    from media import MediaError, open_image

    images = []
    for p in paths[:limit]:
        try:  # the shared decoder (display orientation, bomb guard), capped like manifest backgrounds
            images.append(open_image(p, max_side=BACKGROUND_MAX_SIDE))
        except MediaError:
            continue
    if not images:
        raise RecipeError("no readable background images found; name a folder with task.backgrounds", field="task.backgrounds")
    return images, desc


def _manifest_images(path: Path, limit: int) -> tuple[list[Image.Image], str]:
    from media.refs import decode_image_ref
    from manifests.reader import open_manifest

    images: list[Image.Image] = []
    # batch by batch, so only the rows up to `limit` decodable images are loaded (media may embed bytes)
    for batch in open_manifest(path).dataset().to_batches(columns=["media"], batch_size=max(16, 2 * limit)):
        for media in batch.column(0).to_pylist():
            for item in media or []:
                if item and item.get("kind") in (None, "image", "page"):
                    try:
                        images.append(decode_image_ref(item, max_side=BACKGROUND_MAX_SIDE))
                    except Exception:  # undecodable media are simply not used as backgrounds
                        pass
                    break
            if len(images) >= limit:
                return images, f"images of manifest {path} ({len(images)})"
    if not images:
        raise RecipeError(f"manifest {path} has no decodable images", field="task.backgrounds")
    return images, f"images of manifest {path} ({len(images)})"
