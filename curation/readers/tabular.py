"""Tabular sources (JSONL, Parquet, datasets saved to disk, hub datasets): streamed in row ranges.

A source is cut into row ranges of a fixed size that never depends on the
number of workers. JSONL ranges are byte ranges found by one streaming scan for
newlines (numpy over 8 MB blocks); Parquet and Arrow ranges come from their
row counts. A range is read on its own, so no process ever holds a whole table.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from manifests.errors import RecipeError

BLOCK = 8 << 20

#: table file suffixes and the format each is read as
TABLE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".arrow": "hf"}


@dataclass(frozen=True)
class TableFile:
    path: str
    format: str  # jsonl | parquet | hf


def _read_json(path: Path) -> dict:
    """A saved dataset's JSON descriptor; RecipeError (not a traceback) when it is unreadable or malformed."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"cannot read {path}: not a JSON object")
    return data


def _hf_arrow_files(folder: str, split: str | None) -> list[str] | None:
    """Arrow files of a ``datasets.save_to_disk`` folder (a Dataset, or one split of a DatasetDict)."""
    p = Path(folder)
    if (p / "dataset_dict.json").is_file():
        splits = _read_json(p / "dataset_dict.json").get("splits", [])
        chosen = split or ("train" if "train" in splits else (splits[0] if splits else None))
        if chosen is None or not (p / chosen).is_dir():
            raise RecipeError(f"{folder}: split {split!r} not found (splits: {splits})")
        p = p / chosen
    state = p / "state.json"
    if not state.is_file():
        return None
    entries = _read_json(state).get("_data_files", [])
    if not isinstance(entries, list) or not all(isinstance(f, dict) and "filename" in f for f in entries):
        raise RecipeError(f"cannot read {state}: _data_files entries need a filename")
    files = [f["filename"] for f in entries]
    return [str(p / f) for f in files]


def find_tables(paths: list[str], fmt: str, split: str | None) -> list[TableFile]:
    """Table files behind absolute recipe paths (globs already expanded by the caller)."""
    import glob

    out: list[TableFile] = []
    for pattern in paths:
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        for m in matches:
            if os.path.isdir(m):
                arrow = _hf_arrow_files(m, split) if fmt in ("auto", "hf") else None
                if arrow is not None:
                    out.extend(TableFile(a, "hf") for a in arrow)
                    continue
                for root, dirs, files in os.walk(m):
                    dirs.sort()
                    for f in sorted(files):
                        kind = _format_of(f, fmt)
                        if kind:
                            out.append(TableFile(os.path.join(root, f), kind))
            else:
                kind = _format_of(m, fmt) or ("jsonl" if fmt == "auto" else fmt)
                out.append(TableFile(m, kind))
    return out


def _format_of(name: str, fmt: str) -> str | None:
    by_suffix = TABLE_SUFFIXES.get(Path(name).suffix.lower())
    if fmt == "auto":
        return by_suffix
    return fmt if by_suffix == fmt else None


# --------------------------------------------------------------------------- planning


def jsonl_ranges(path: str, rows_per_chunk: int, limit: int | None = None) -> list[tuple[int, int, int, int]]:
    """[(byte_start, byte_end, first_line, lines)] of ``rows_per_chunk`` lines each, from one newline scan.

    ``limit`` counts lines (blank ones included) from the start of the file.
    """
    size = os.path.getsize(path)
    if size == 0:
        return []
    cuts = [0]
    count = offset = 0
    end = size
    stopped = False
    with open(path, "rb") as fh:
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            nl = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
            if limit is not None and count + len(nl) >= limit:
                nl = nl[: limit - count]
                end = offset + int(nl[-1]) + 1
                stopped = True
            line_no = count + 1 + np.arange(len(nl))
            cuts.extend((offset + nl[line_no % rows_per_chunk == 0] + 1).tolist())
            count += len(nl)
            offset += len(block)
            if stopped:
                break
    total = count
    if not stopped and not _ends_with_newline(path, size):
        total += 1  # a last line without a newline
    if cuts[-1] < end:
        cuts.append(end)
    ranges = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        first = k * rows_per_chunk
        ranges.append((a, b, first, min(rows_per_chunk, total - first)))
    return ranges


def _ends_with_newline(path: str, size: int) -> bool:
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


def table_rows(tf: TableFile) -> int:
    if tf.format == "parquet":
        return pq.ParquetFile(tf.path).metadata.num_rows
    with pa.memory_map(tf.path) as src:
        reader = _arrow_reader(src)
        return sum(b.num_rows for b in reader)


def _arrow_reader(src):
    try:
        return pa.ipc.open_stream(src)
    except pa.ArrowInvalid:
        src.seek(0)
        f = pa.ipc.open_file(src)
        return (f.get_batch(i) for i in range(f.num_record_batches))


# --------------------------------------------------------------------------- reading


def read_jsonl_range(path: str, start: int, end: int, first_line: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """(line number, parsed object or None, problem reason, detail) for each non-blank line of the range."""
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()  # the range ends with a newline
    for k, raw in enumerate(parts):
        line_no = first_line + k
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield line_no, raw, "invalid_utf8", f"line {line_no + 1}: {exc}"
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            yield line_no, raw, "invalid_json", f"line {line_no + 1}: {exc.msg} at column {exc.colno}"
            continue
        if not isinstance(obj, dict):
            yield line_no, raw, "invalid_json", f"line {line_no + 1}: a {type(obj).__name__}, not an object"
            continue
        yield line_no, obj, None, None


def read_table_range(tf: TableFile, row0: int, rows: int) -> pa.Table:
    """Rows [row0, row0+rows) of a Parquet or Arrow file, touching only the row groups/batches needed."""
    if tf.format == "parquet":
        pf = pq.ParquetFile(tf.path)
        md = pf.metadata
        groups, base, first_base = [], 0, None
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            if base + n > row0 and base < row0 + rows:
                groups.append(g)
                first_base = base if first_base is None else first_base
            base += n
        if not groups:
            return pf.schema_arrow.empty_table()
        t = pf.read_row_groups(groups)
        return t.slice(row0 - first_base, rows)
    with pa.memory_map(tf.path) as src:
        batches, base = [], 0
        for b in _arrow_reader(src):
            if base + b.num_rows > row0 and base < row0 + rows:
                lo = max(0, row0 - base)
                hi = min(b.num_rows, row0 + rows - base)
                batches.append(b.slice(lo, hi - lo))
            base += b.num_rows
            if base >= row0 + rows:
                break
        if not batches:
            return pa.table({})
        return pa.Table.from_batches(batches)
