"""Deterministic enumeration of file sources (folders, globs, files) and per-file row building."""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import media as M

KIND_EXTENSIONS: dict[str, frozenset[str]] = {
    # .svg is listed so mislabelled raster files are read; a real SVG is dropped as undecodable (not rasterised)
    "images": M.IMAGE_EXTENSIONS | frozenset({".svg"}),
    "image_text": M.IMAGE_EXTENSIONS,
    "document": M.PDF_EXTENSIONS | frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"}),
    "text": frozenset({".txt", ".md", ".markdown", ".rst"}),
    "video": M.VIDEO_EXTENSIONS,
}


@dataclass(frozen=True)
class FileEntry:
    rel: str  # posix path relative to the source root: the sample key
    path: str  # absolute path as found (symlinks not resolved)


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        base.append(part)
    return str(Path(*base)) if base else os.sep


def _walk(folder: str, extensions: frozenset[str], recursive: bool, out: list[str], seen_dirs: set[str]) -> None:
    """Sorted depth-first walk that follows folder symlinks once (a loop is entered only once).

    Entries that cannot even be stat-ed (symlink loops, dangling links) are
    kept when their name has a wanted suffix, so the reader can put them in
    the ledger with a reason instead of silently losing them.
    """
    try:
        real = os.path.realpath(folder)
    except OSError:
        real = folder
    if real in seen_dirs:
        return
    seen_dirs.add(real)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        out.append(folder.rstrip(os.sep) + os.sep)  # an unreadable folder: accounted as one failed input
        return
    for e in entries:
        try:
            is_dir = e.is_dir(follow_symlinks=True)
        except OSError:
            is_dir = False
        if is_dir:
            if recursive:
                _walk(e.path, extensions, recursive, out, seen_dirs)
            continue
        if Path(e.name).suffix.lower() in extensions:
            out.append(e.path)


def enumerate_files(patterns: list[str], extensions: frozenset[str], recursive: bool = True) -> tuple[str, list[FileEntry]]:
    """(root, entries sorted by relative path) for absolute ``patterns`` (folders, globs or files)."""
    found: list[str] = []
    bases: list[str] = []
    seen_dirs: set[str] = set()
    for pattern in patterns:
        if glob.has_magic(pattern):
            bases.append(_glob_base(pattern))
            for match in sorted(glob.glob(pattern, recursive=True)):
                if os.path.isdir(match):
                    _walk(match, extensions, recursive, found, seen_dirs)
                elif Path(match).suffix.lower() in extensions:
                    found.append(match)
        elif os.path.isdir(pattern):
            bases.append(pattern)
            _walk(pattern, extensions, recursive, found, seen_dirs)
        else:  # an explicit file is taken whatever its suffix (it may also be a broken link)
            bases.append(os.path.dirname(pattern) or os.sep)
            found.append(pattern)
    if not bases:
        return "", []
    root = os.path.commonpath([os.path.abspath(b) for b in bases])
    entries: dict[str, FileEntry] = {}
    for p in found:
        absp = os.path.abspath(p)
        rel = Path(os.path.relpath(absp, root)).as_posix()
        if p.endswith(os.sep):
            rel += "/"
        entries.setdefault(rel, FileEntry(rel=rel, path=absp))
    return root, [entries[k] for k in sorted(entries)]


def sidecar_text(path: str, suffixes: tuple[str, ...] = (".txt", ".caption")) -> tuple[str | None, str | None]:
    """(text, problem) of a same-stem text file next to ``path``; (None, None) when there is none."""
    stem = os.path.splitext(path)[0]
    for suffix in suffixes:
        cand = stem + suffix
        if os.path.isfile(cand):
            try:
                with open(cand, "rb") as fh:
                    return fh.read().decode("utf-8"), None
            except UnicodeDecodeError as exc:
                return None, f"invalid_utf8:{cand}: {exc}"
            except OSError as exc:
                return None, f"unreadable:{cand}: {exc.strerror}"
    return None, None
