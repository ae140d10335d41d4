"""Readers: plan a source into fixed-size chunks, and read one chunk into manifest rows.

Planning is cheap and deterministic (sorted paths, row counts, one newline
scan for JSONL); reading happens per chunk inside workers. A chunk's rows come
out in input order with core columns plus private ones the engine uses:
``_pos`` (ordinal of the input within its source, for ordering only), ``_key``
(the sample key the id is derived from) and ``_uri`` (what the ledger shows).
Inputs that cannot even be read are marked dropped at stage ``read``.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import MEDIA_LIST, STAGE_READ
from curation.operators import mark_dropped
from curation.readers.files import KIND_EXTENSIONS, enumerate_files, sidecar_text
from curation.readers.tabular import TABLE_SUFFIXES, TableFile, find_tables, jsonl_ranges, read_jsonl_range, read_table_range, table_rows
from curation.recipe import Recipe, Source
import media as M
from manifests.errors import RecipeError
from manifests.schema import TURN_TYPE, make_id

PRIVATE_POS = "_pos"
PRIVATE_KEY = "_key"
PRIVATE_URI = "_uri"

BASE_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("modality", pa.string()), ("media", MEDIA_LIST),
    ("text", pa.string()), ("turns", pa.list_(TURN_TYPE)), ("meta", pa.string()),
    (PRIVATE_POS, pa.int64()), (PRIVATE_KEY, pa.string()), (PRIVATE_URI, pa.string()),
])


@dataclass
class SourcePlan:
    """A source cut into chunk specs (JSON-able dicts) plus a fingerprint of its inputs."""

    index: int
    name: str
    kind: str
    fingerprint: str
    inputs: int  # files or table lines planned (rows read may be fewer: blank lines are skipped)
    chunks: list[dict] = field(default_factory=list)


def _is_table_source(src: Source, paths: list[str]) -> bool:
    if src.hub is not None:
        return True
    if src.kind not in ("image_text", "text"):
        return False
    if src.format in ("jsonl", "parquet", "hf"):
        return True
    if src.format == "files":
        return False
    if src.kind == "image_text":
        return True  # auto: image_text sources are tables unless format: files
    # text: tables when the paths name table files or dataset folders; folders of .txt otherwise
    for p in paths:
        if Path(p).suffix.lower() in TABLE_SUFFIXES:
            return True
        if os.path.isdir(p) and ((Path(p) / "state.json").is_file() or (Path(p) / "dataset_dict.json").is_file()):
            return True
    return False


def plan_source(recipe: Recipe, index: int) -> SourcePlan:
    src = recipe.sources[index]
    paths = [recipe.resolve(p) for p in src.paths]
    h = hashlib.sha256()
    h.update(src.kind.encode())
    chunks: list[dict] = []
    if not _is_table_source(src, paths):
        exts = frozenset(src.extensions) if src.extensions else KIND_EXTENSIONS[src.kind]
        root, entries = enumerate_files(paths, exts, src.recursive)
        if src.limit is not None:
            entries = entries[: src.limit]
        if not entries:
            raise RecipeError(f"no {src.kind} files found (suffixes {sorted(exts)})", field=f"sources[{index}].path")
        for e in entries:
            try:
                st = os.stat(e.path)
                h.update(f"{e.rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError as exc:
                h.update(f"{e.rel}\0error:{exc.errno}\n".encode())
        size = src.chunk
        for k in range(0, len(entries), size):
            items = [[pos, e.rel, e.path] for pos, e in enumerate(entries[k : k + size], start=k)]
            chunks.append({"source": index, "type": "files", "root": root, "items": items})
        return SourcePlan(index, src.name, src.kind, h.hexdigest(), len(entries), chunks)

    files = _table_files(recipe, src, index, paths)
    pos0 = 0
    remaining = src.limit
    for tf in files:
        try:
            st = os.stat(tf.path)
            h.update(f"{tf.path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if remaining is not None and remaining <= 0:
                break
            if tf.format == "jsonl":
                ranges = jsonl_ranges(tf.path, src.chunk, remaining)
                lines = sum(r[3] for r in ranges)
            else:
                lines = table_rows(tf)
                if remaining is not None:
                    lines = min(lines, remaining)
        except (OSError, pa.ArrowException) as exc:  # a table that cannot be planned cannot be read either
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
            raise RecipeError(f"cannot read {tf.path}: {detail}", field=f"sources[{index}].path") from None
        if tf.format == "jsonl":
            for a, b, line0, n in ranges:
                chunks.append({"source": index, "type": "jsonl", "file": tf.path, "start": a, "end": b,
                               "line0": line0, "lines": n, "pos0": pos0})
        else:
            for r0 in range(0, lines, src.chunk):
                chunks.append({"source": index, "type": "table", "format": tf.format, "file": tf.path, "row0": r0,
                               "rows": min(src.chunk, lines - r0), "pos0": pos0})
        pos0 += lines
        if remaining is not None:
            remaining -= lines
    if not chunks:
        raise RecipeError("the source's tables hold no rows", field=f"sources[{index}].path")
    return SourcePlan(index, src.name, src.kind, h.hexdigest(), pos0, chunks)


def _table_files(recipe: Recipe, src: Source, index: int, paths: list[str]) -> list[TableFile]:
    if src.hub is not None:
        return _hub_files(recipe, src, index)
    fmt = src.format if src.format != "files" else "auto"
    try:
        files = find_tables(paths, fmt, src.split)
    except RecipeError as exc:
        raise RecipeError(str(exc), field=f"sources[{index}].path") from None
    if not files:
        raise RecipeError("no jsonl, parquet or saved dataset found", field=f"sources[{index}].path")
    return files


def _hub_files(recipe: Recipe, src: Source, index: int) -> list[TableFile]:
    """Arrow cache files of ``datasets.load_dataset(hub)``: a hub id (network) or a local dataset folder."""
    import datasets

    target = src.hub
    local = recipe.resolve(target)
    if os.path.exists(local):
        target = local
    try:
        ds = datasets.load_dataset(target, src.hub_config, split=src.split or "train")
    except Exception as exc:  # hub/network/format problems are the user's to fix
        raise RecipeError(f"cannot load {src.hub!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                          field=f"sources[{index}].hub") from None
    files = [f["filename"] for f in ds.cache_files]
    if not files:
        raise RecipeError(f"{src.hub!r} loaded in memory only; save it to disk and use path:", field=f"sources[{index}].hub")
    return [TableFile(f, "hf") for f in files]


def spec_inputs(spec: dict) -> int:
    """Inputs a chunk covers (files, or table lines/rows): the unit of progress."""
    if spec["type"] == "files":
        return len(spec["items"])
    return int(spec.get("rows", spec.get("lines", 0)))


# --------------------------------------------------------------------------- reading


class _Rows:
    """Column lists for one chunk, plus read-stage failures."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.cols: dict[str, list] = {n: [] for n in BASE_SCHEMA.names}
        self.fail_reason: list[str | None] = []
        self.fail_detail: list[str | None] = []

    def add(self, pos: int, key: str, uri: str, media: list[dict] | None = None, text: str | None = None,
            turns: list[dict] | None = None, meta: dict | None = None, fail: tuple[str, str] | None = None) -> None:
        c = self.cols
        c["id"].append(make_id(self.src.name, key))
        c["source"].append(self.src.name)
        c["modality"].append(self.src.modality)
        c["media"].append(media if media is not None else [])
        c["text"].append(text)
        c["turns"].append(turns)
        c["meta"].append(json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str) if meta else None)
        c[PRIVATE_POS].append(pos)
        c[PRIVATE_KEY].append(key)
        c[PRIVATE_URI].append(uri)
        self.fail_reason.append(fail[0] if fail else None)
        self.fail_detail.append(fail[1] if fail else None)

    def table(self) -> pa.Table:
        t = pa.Table.from_pydict(self.cols, schema=BASE_SCHEMA)
        reasons = pa.array(self.fail_reason, pa.string())
        return mark_dropped(t, pc.is_valid(reasons), STAGE_READ, reasons, pa.array(self.fail_detail, pa.string()))


def read_chunk(recipe: Recipe, spec: dict) -> pa.Table:
    """The rows of one chunk (see module doc)."""
    src = recipe.sources[spec["source"]]
    rows = _Rows(src)
    if spec["type"] == "files":
        for pos, rel, path in spec["items"]:
            _file_row(rows, src, pos, rel, path)
    elif spec["type"] == "jsonl":
        base = os.path.dirname(spec["file"])
        for line_no, obj, reason, detail in read_jsonl_range(spec["file"], spec["start"], spec["end"], spec["line0"]):
            uri = f"{spec['file']}:{line_no + 1}"
            pos = spec["pos0"] + line_no
            if reason is not None:
                rows.add(pos, "raw:" + hashlib.blake2b(obj, digest_size=16).hexdigest(), uri, fail=(reason, detail))
                continue
            key = _row_key(src, obj)
            _table_row(rows, recipe, src, pos, key, uri, obj, base)
    else:
        tf = TableFile(spec["file"], spec["format"])
        table = read_table_range(tf, spec["row0"], spec["rows"])
        base = os.path.dirname(spec["file"])
        for k, obj in enumerate(table.to_pylist()):
            row = spec["row0"] + k
            _table_row(rows, recipe, src, spec["pos0"] + row, _row_key(src, obj), f"{spec['file']}:{row}", obj, base)
    return rows.table()


def _file_row(rows: _Rows, src: Source, pos: int, rel: str, path: str) -> None:
    meta = {"path": rel}
    if rel.endswith("/"):
        rows.add(pos, rel, path, meta=meta, fail=("unreadable", f"{path}: folder cannot be listed"))
        return
    try:
        M.check_file(path)
    except M.MediaError as exc:
        rows.add(pos, rel, path, meta=meta, fail=(exc.reason, exc.detail))
        return
    suffix = Path(path).suffix.lower()
    if src.kind == "text":
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            rows.add(pos, rel, path, meta=meta, fail=("invalid_utf8", f"{path}: {exc}"))
            return
        except OSError as exc:
            rows.add(pos, rel, path, meta=meta, fail=("unreadable", f"{path}: {exc.strerror}"))
            return
        rows.add(pos, rel, path, text=text, meta=meta)
        return
    if src.kind == "video":
        rows.add(pos, rel, path, media=[{"uri": path, "kind": "video", "format": suffix.lstrip(".")}], meta=meta)
        return
    if src.kind == "document":
        if suffix == ".pdf":
            rows.add(pos, rel, path, media=[{"uri": path, "kind": "page", "format": "PDF"}], meta=meta)
            return
        text, problem = sidecar_text(path)
        if problem:
            reason, detail = problem.split(":", 1)
            rows.add(pos, rel, path, meta=meta, fail=(reason, detail))
            return
        rows.add(pos, rel, path, media=[{"uri": path, "kind": "page", "page": 0}], text=text, meta=meta)
        return
    if src.kind == "image_text":  # folder of images with same-stem caption files
        text, problem = sidecar_text(path)
        if problem or text is None:
            reason, detail = problem.split(":", 1) if problem else ("missing_text", f"{path}: no .txt/.caption next to it")
            rows.add(pos, rel, path, meta=meta, fail=(reason, detail))
            return
        rows.add(pos, rel, path, media=[{"uri": path, "kind": "image"}], text=text, meta=meta)
        return
    rows.add(pos, rel, path, media=[{"uri": path, "kind": "image"}], meta=meta)


def _canonical(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": hashlib.blake2b(bytes(value), digest_size=16).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def _row_key(src: Source, obj: dict) -> str:
    """An id column's value, else a content hash of the row: never its position."""
    if src.id_column is not None and obj.get(src.id_column) is not None:
        return f"id:{obj[src.id_column]}"
    blob = json.dumps(_canonical(obj), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    return "sha:" + hashlib.blake2b(blob, digest_size=16).hexdigest()


_ROLES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


def _turns(value: Any) -> list[dict] | None:
    """Normalise conversation turns ({role, content} or LLaVA's {from, value})."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    out = []
    for t in value if isinstance(value, list) else []:
        if not isinstance(t, dict):
            continue
        role = str(t.get("role", t.get("from", "user")))
        content = t.get("content", t.get("value"))
        if isinstance(content, list):  # multi-part messages: keep the text parts
            content = "\n".join(str(p.get("text")) for p in content if isinstance(p, dict) and p.get("text") is not None)
        out.append({"role": _ROLES.get(role, role), "content": None if content is None else str(content)})
    return out or None


def _images(value: Any, root: str) -> list[dict]:
    """Media entries for an image cell: a path, an HF Image struct {bytes, path}, or a list of them."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [m for v in value for m in _images(v, root)]
    if isinstance(value, dict):
        data = value.get("bytes")
        if data is not None:
            return [{"uri": None, "bytes": bytes(data), "kind": "image"}]
        value = value.get("path")
        if value is None:
            return []
    if isinstance(value, (bytes, bytearray)):
        return [{"uri": None, "bytes": bytes(value), "kind": "image"}]
    s = str(value)
    if "://" in s and not s.startswith("file://"):
        return [{"uri": s, "kind": "image"}]
    s = s[7:] if s.startswith("file://") else s
    return [{"uri": os.path.normpath(s if os.path.isabs(s) else os.path.join(root, s)), "kind": "image"}]


def _table_row(rows: _Rows, recipe: Recipe, src: Source, pos: int, key: str, uri: str, obj: dict, base: str) -> None:
    used = {c for c in (src.text_column, src.image_column, src.turns_column, src.id_column) if c}
    if src.kind == "text":
        col = src.text_column or "text"
        used.add(col)
        meta = _meta(obj, used)
        text = obj.get(col)
        if not isinstance(text, str):
            rows.add(pos, key, uri, meta=meta, fail=("missing_text", f"{uri}: column {col!r} is {type(text).__name__}"))
            return
        rows.add(pos, key, uri, text=text, meta=meta)
        return
    root = recipe.resolve(src.image_root) if src.image_root else base
    meta = _meta(obj, used)
    media = _images(obj.get(src.image_column), root) if src.image_column else []
    text = obj.get(src.text_column) if src.text_column else None
    turns = _turns(obj.get(src.turns_column)) if src.turns_column else None
    if text is not None and not isinstance(text, str):
        text = str(text)
    if text is None and turns is None:
        rows.add(pos, key, uri, media=media, meta=meta,
                 fail=("missing_text", f"{uri}: no text in {src.text_column or src.turns_column!r}"))
        return
    rows.add(pos, key, uri, media=media, text=text, turns=turns, meta=meta)


def _meta(obj: dict, used: Iterable[str]) -> dict | None:
    skip = set(used)
    out = {}
    for k, v in obj.items():
        if k in skip or isinstance(v, (bytes, bytearray, memoryview)):
            continue
        if isinstance(v, dict) and any(isinstance(x, (bytes, bytearray)) for x in v.values()):
            continue
        out[k] = v
    return out or None
