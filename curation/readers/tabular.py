"""Table files (Parquet, Arrow files of datasets saved to disk, JSON): finding them, counting and reading row ranges.

A source is cut into row ranges of a fixed size that never depends on the
number of workers; Parquet and Arrow ranges come from their row counts (JSON
ranges: curation.readers.jsonparse). A range is read on its own, in batches of
its own size, so no process ever holds a whole table or row group.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.errors import RecipeError

BLOCK = 8 << 20

#: table file suffixes and the format each is read as
#: (".json" may hold JSON Lines or one JSON array: the JSON readers tell them apart by the first byte)
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

    from manifests import storage

    out: list[TableFile] = []
    for pattern in paths:
        if storage.is_uri(pattern):  # objects: a folder holds the tables its listing names by suffix
            found = storage.glob(pattern) if glob.has_magic(pattern) else \
                storage.find(pattern) if storage.isdir(pattern) else [pattern]
            for m in found:
                kind = _format_of(m, fmt) or (("jsonl" if fmt == "auto" else fmt) if m == pattern else None)
                if kind:
                    out.append(TableFile(m, kind))
            continue
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


def _parquet_source(path: str):
    """A Parquet file to hand pyarrow: the path, or a ranged-read file for an object (footer + needed row groups)."""
    from manifests.storage import is_uri, open_input

    return open_input(path, 1 << 20) if is_uri(path) else path


def _format_of(name: str, fmt: str) -> str | None:
    by_suffix = TABLE_SUFFIXES.get(Path(name).suffix.lower())
    if fmt == "auto":
        return by_suffix
    return fmt if by_suffix == fmt else None


# --------------------------------------------------------------------------- planning


def table_rows(tf: TableFile) -> int:
    if tf.format == "parquet":
        return pq.ParquetFile(_parquet_source(tf.path)).metadata.num_rows
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


def read_table_range(tf: TableFile, row0: int, rows: int) -> pa.Table:
    """Rows [row0, row0+rows) of a Parquet or Arrow file, touching only the row groups/batches needed."""
    if tf.format == "parquet":
        pf = pq.ParquetFile(_parquet_source(tf.path))
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
        # stream the row groups in batches of the chunk's size: memory follows the chunk, not the row group
        skip = row0 - first_base
        parts, seen = [], 0
        for batch in pf.iter_batches(batch_size=max(1, rows), row_groups=groups, use_threads=False):
            lo, hi = max(0, skip - seen), min(batch.num_rows, skip + rows - seen)
            if hi > lo:
                parts.append(batch.slice(lo, hi - lo))
            seen += batch.num_rows
            if seen >= skip + rows:
                break
        return pa.Table.from_batches(parts, schema=pf.schema_arrow) if parts else pf.schema_arrow.empty_table()
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
