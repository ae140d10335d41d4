"""``format: files``: deterministic enumeration of folders, globs and files, and one row per file."""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa

import media as M
from curation.filters.common import MEDIA_LIST
from curation.readers.base import ChunkSpec, Fingerprint, Reader, SourceContext
from curation.readers.rows import assemble

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
    """(root, entries sorted by relative path) for absolute ``patterns`` (folders, globs or files).

    Patterns on an object store (``s3://bucket/images/``) are listed there; entries keep their URIs.
    """
    from manifests import storage

    if any(storage.is_uri(p) for p in patterns):
        return _enumerate_objects(patterns, extensions, recursive)
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


def _enumerate_objects(patterns: list[str], extensions: frozenset[str], recursive: bool) -> tuple[str, list[FileEntry]]:
    from manifests import storage

    found: list[str] = []
    for pattern in patterns:
        if not storage.is_uri(pattern):
            raise ValueError(f"{pattern}: mix of local paths and object-store URIs in one source")
        if glob.has_magic(pattern):
            found += [u for u in storage.glob(pattern) if Path(u).suffix.lower() in extensions]
        elif storage.isdir(pattern):
            found += [u for u in storage.find(pattern, recursive) if Path(u).suffix.lower() in extensions]
        else:
            found.append(pattern)
    if not found:
        return "", []
    root = storage.common_prefix([p.rstrip("/") + "/x" if storage.isdir(p) else p for p in patterns if not glob.has_magic(p)]
                                 + found)
    entries: dict[str, FileEntry] = {}
    for u in found:
        rel = storage.relative(u, root)
        entries.setdefault(rel, FileEntry(rel=rel, path=u))
    return root, [entries[k] for k in sorted(entries)]


def _object_row(kind: str, path: str) -> tuple[list[dict] | None, str | None, tuple[str, str] | None] | None:
    """The checks ``media.check_file`` makes on a local file, for an object: exists, not empty (None: go on)."""
    from manifests import storage

    meta = storage.info(path)
    if meta is None:
        return None, None, ("missing", f"{path}: no such object")
    if not int(meta.get("size") or 0):
        return None, None, ("zero_bytes", f"{path}: 0 bytes")
    if kind == "text":
        try:
            return None, (storage.read_bytes(path) or b"").decode("utf-8-sig"), None
        except UnicodeDecodeError as exc:
            return None, None, ("invalid_utf8", f"{path}: {exc}")
    return None


def sidecar_text(path: str, suffixes: tuple[str, ...] = (".txt", ".caption")) -> tuple[str | None, str | None]:
    """(text, problem) of a same-stem text file next to ``path``; (None, None) when there is none."""
    stem = os.path.splitext(path)[0]
    from manifests import storage

    if storage.is_uri(path):
        for suffix in suffixes:
            data = storage.read_bytes(stem + suffix)
            if data is not None:
                try:
                    return data.decode("utf-8"), None
                except UnicodeDecodeError as exc:
                    return None, f"invalid_utf8:{stem + suffix}: {exc}"
        return None, None
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


# --------------------------------------------------------------------------- the reader


@dataclass(frozen=True)
class FilesSpec(ChunkSpec):
    root: str
    items: tuple  # ((position, relative path, absolute path), ...)

    def inputs(self) -> int:
        return len(self.items)


class FilesReader(Reader):
    """``format: files``: one row per file (images, PDFs, document images, text files, videos, or images with
    same-stem caption files for image_text). The key is the path relative to the source root."""

    name = "files"
    spec_type = FilesSpec
    kinds = frozenset({"images", "image_text", "document", "text", "video"})
    unique_keys = True

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        return ctx.kind in ("images", "document", "video")

    def plan(self, ctx: SourceContext) -> tuple[list[ChunkSpec], str, int]:
        src = ctx.source
        exts = frozenset(src.extensions) if src.extensions else KIND_EXTENSIONS[src.kind]
        root, entries = enumerate_files(list(ctx.paths), exts, src.recursive)
        if ctx.limit is not None:
            entries = entries[: ctx.limit]
        if not entries:
            raise ctx.error(f"no {src.kind} files found (suffixes {sorted(exts)})")
        fp = Fingerprint(src.kind, "files" if src.format != "auto" else "auto")
        for e in entries:
            fp.file(e.path, e.rel)
        specs: list[ChunkSpec] = []
        for k in range(0, len(entries), ctx.chunk):
            items = tuple((pos, e.rel, e.path) for pos, e in enumerate(entries[k : k + ctx.chunk], start=k))
            specs.append(FilesSpec(ctx.index, k, root, items))
        return specs, fp.hexdigest(), len(entries)

    def read(self, ctx: SourceContext, spec: FilesSpec) -> pa.Table:
        return self._rows(ctx, spec, lambda rel, path: _file_row(ctx.kind, rel, path))

    # the two methods below let the Ray engine isolate a file whose reading kills its worker (curation.engine.ray_engine)
    @staticmethod
    def narrow(spec: FilesSpec, lo: int, hi: int) -> FilesSpec:
        """The files ``[lo, hi)`` of a chunk as a chunk of their own (each file's row does not depend on the others)."""
        items = tuple(spec.items[lo:hi])
        return replace(spec, pos0=items[0][0] if items else spec.pos0, items=items)

    def unread(self, ctx: SourceContext, spec: FilesSpec, reason: str, detail: str) -> pa.Table:
        """The chunk's rows without opening its files, every one dropped at stage ``read`` with ``reason``."""
        return self._rows(ctx, spec, lambda rel, path: (None, None, (reason, detail)))

    def _rows(self, ctx: SourceContext, spec: FilesSpec, row: Callable[[str, str], tuple]) -> pa.Table:
        cols: dict[str, list] = {k: [] for k in ("key", "uri", "pos", "media", "text", "meta", "reason", "detail")}
        for pos, rel, path in spec.items:
            media, text, fail = row(rel, path)
            for k, v in (("key", rel), ("uri", path), ("pos", pos), ("media", media or []), ("text", text),
                         ("meta", json.dumps({"path": rel}, ensure_ascii=False)),
                         ("reason", fail[0] if fail else None), ("detail", fail[1] if fail else None)):
                cols[k].append(v)
        return assemble(ctx, cols["key"], cols["uri"], cols["pos"], media=pa.array(cols["media"], MEDIA_LIST),
                        text=pa.array(cols["text"], pa.string()), meta=pa.array(cols["meta"], pa.string()),
                        fail_reason=cols["reason"], fail_detail=cols["detail"])


def _file_row(kind: str, rel: str, path: str) -> tuple[list[dict] | None, str | None, tuple[str, str] | None]:
    """(media, text, failure) of one file."""
    if rel.endswith("/"):
        return None, None, ("unreadable", f"{path}: folder cannot be listed")
    from manifests.storage import is_uri

    if is_uri(path):
        early = _object_row(kind, path)
        if early is not None:
            return early
    else:
        try:
            M.check_file(path)
        except M.MediaError as exc:
            return None, None, (exc.reason, exc.detail)
    suffix = Path(path).suffix.lower()
    if kind == "text":
        try:
            with open(path, "rb") as fh:
                return None, fh.read().decode("utf-8-sig"), None
        except UnicodeDecodeError as exc:
            return None, None, ("invalid_utf8", f"{path}: {exc}")
        except OSError as exc:
            return None, None, ("unreadable", f"{path}: {exc.strerror}")
    if kind == "video":
        return [{"uri": path, "kind": "video", "format": suffix.lstrip(".")}], None, None
    if kind == "document":
        if suffix == ".pdf":
            return [{"uri": path, "kind": "page", "format": "PDF"}], None, None
        text, problem = sidecar_text(path)
        if problem:
            reason, detail = problem.split(":", 1)
            return None, None, (reason, detail)
        return [{"uri": path, "kind": "page", "page": 0}], text, None
    if kind == "image_text":
        text, problem = sidecar_text(path)
        if problem or text is None:
            reason, detail = problem.split(":", 1) if problem else ("missing_text", f"{path}: no .txt/.caption next to it")
            return None, None, (reason, detail)
        return [{"uri": path, "kind": "image"}], text, None
    return [{"uri": path, "kind": "image"}], None, None
