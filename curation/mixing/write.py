"""Write a planned mixture: a seeded global shuffle, sharded for streaming, without holding it in memory.

Each selected row gets a random sort key: a seeded 64-bit mix of its scan index
(distinct for distinct rows, so the order is a permutation). Pass one reads the
inputs batch by batch (only row groups that hold selected rows, their repeat
counts replayed from the plan shard by shard) and appends each selected row,
tagged with its key, to the spill file of its key range. Pass two reads one
spill file at a time in key order, sorts its rows by key and cuts shards; a
shard that straddles two files carries its first rows into the next. A spill
file larger than ``SPILL_FILE_BYTES`` (the spill files are at most
``MAX_SPILL_FILES``, so each grows with the mixture) is first split again by
key range, batch by batch, and its parts gathered in order. Memory stays at
about one spill file of at most that size plus one shard, whatever the mixture;
disk holds the spill once (twice for a split file, while it is split).
"""
from __future__ import annotations

import math
import shutil
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from curation.arrays import group_order, grouped, runs
from curation.mixing.plan import MixturePlan
from manifests.errors import UserError
from manifests.memory import release_unused
from manifests.schema import CORE_NAMES, build_schema, conform

REPEAT_COLUMN = "repeat"
REPEAT_TYPE = pa.int32()
_POS = "_mix_pos"
#: output shards aim at this many uncompressed bytes (before zstd) ...
SHARD_TARGET_BYTES = 128 << 20
#: ... within these row bounds
SHARD_ROWS_MIN, SHARD_ROWS_MAX = 1_000, 100_000
#: at most this many spill files open at once; each covers a run of consecutive output shards
MAX_SPILL_FILES = 128
#: rows per read batch in pass one (full rows, possibly with embedded media bytes)
READ_BATCH_ROWS = 16_384
#: a spill file's buffered rows are written once they reach this many rows ...
SPILL_FLUSH_ROWS = 8_192
#: ... or their share of this many bytes, the bound on all buffered rows
SPILL_BUFFER_BYTES = 128 << 20
#: a spill file is sorted in memory when its rows hold at most this many bytes (Arrow, uncompressed); a larger one
#: is split again by key range first
SPILL_FILE_BYTES = 128 << 20


def output_schema(plan: MixturePlan) -> pa.Schema:
    """The inputs' columns (core, then every extension column any input has) plus `repeat`."""
    extra: dict[str, pa.DataType] = {}
    seen_in: dict[str, int] = {}
    for item in plan.inputs:
        for f in item.manifest.schema:
            if f.name in CORE_NAMES:
                continue
            if f.name in extra and not extra[f.name].equals(f.type):
                raise UserError(
                    f"column {f.name!r} is {f.type} here but {extra[f.name]} in inputs[{seen_in[f.name]}]; "
                    "inputs of one mixture must agree on column types",
                    field=f"inputs[{item.index}]",
                )
            extra.setdefault(f.name, f.type)
            seen_in.setdefault(f.name, item.index)
    extra[REPEAT_COLUMN] = REPEAT_TYPE
    return build_schema(extra)


def auto_shard_rows(plan: MixturePlan) -> int:
    """Rows per output shard from the inputs' average uncompressed row size (from the scan's Parquet footers)."""
    total_rows = int(plan.scan.file_rows.sum())
    per_row = int(plan.scan.file_bytes.sum()) / total_rows if total_rows else 1.0
    return int(min(SHARD_ROWS_MAX, max(SHARD_ROWS_MIN, SHARD_TARGET_BYTES // max(per_row, 1.0))))


def order_keys(seed: int, index: np.ndarray) -> np.ndarray:
    """The output sort key of the rows at these scan indices: a seeded bijective mix (splitmix64) of the index."""
    x = index.astype(np.uint64) + np.uint64((int(seed) & 0xFFFFFFFF) * 0x9E3779B97F4A7C15 % (1 << 64))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def write_mixture(plan: MixturePlan, writer: Any, shard_rows: int) -> int:
    """Write every selected row into `writer` (a ManifestWriter) in shuffled order; returns shards written."""
    schema = writer.schema
    spill_schema = schema.append(pa.field(_POS, pa.uint64()))
    n_out = plan.rows_selected
    if n_out == 0:
        return 0
    n_shards = math.ceil(n_out / shard_rows)
    n_spill = min(n_shards, MAX_SPILL_FILES)
    spill_dir = Path(tempfile.mkdtemp(prefix=".mix-spill-", dir=writer.out))
    try:
        release_unused()  # the plan's passes: the writing starts from what the job holds, not their peak
        sizes = _scatter(plan, spill_schema, schema, n_spill, spill_dir)
        release_unused()
        # (file, its rows' bytes, its rows, the key range it holds), in key order
        todo = deque((spill_dir / f"{b:05d}.arrow", *sizes[b], *_key_range(b, n_spill)) for b in range(n_spill))
        carry: pa.Table | None = None
        written = 0
        while todo:
            path, nbytes, rows, lo, hi = todo.popleft()
            if nbytes > SPILL_FILE_BYTES and rows > 1:
                todo.extendleft(reversed(_split(path, nbytes, lo, hi, spill_schema)))
                continue
            carry, written = _gather(path, carry, shard_rows, written, writer, last=not todo)
            path.unlink()
            release_unused()
        return written
    finally:
        shutil.rmtree(spill_dir, ignore_errors=True)


def _key_range(b: int, n_spill: int) -> tuple[int, int]:
    """The keys ``[lo, hi)`` of spill file ``b`` of ``n_spill``: those whose top 32 bits * n_spill >> 32 is ``b``."""
    return -(-(b << 32) // n_spill) << 32, -(-((b + 1) << 32) // n_spill) << 32  # ceilings of b * 2**32 / n_spill


def _split(path: Path, nbytes: int, lo: int, hi: int, schema: pa.Schema) -> list[tuple[Path, int, int, int, int]]:
    """Split one spill file by key range into parts of about ``SPILL_FILE_BYTES / 2``, reading it a batch at a time;
    returns the parts in key order (file, bytes, rows, key range). The part of a key is a non-decreasing function
    of it, so the parts gathered in order give the file's rows in key order."""
    m = int(max(2, min(MAX_SPILL_FILES, math.ceil(2 * nbytes / max(SPILL_FILE_BYTES, 1)))))
    sub_dir = path.with_name(path.stem + "-split")
    sub_dir.mkdir()
    buffers = _SpillBuffers(sub_dir, schema, m)
    scale = m / float(hi - lo)
    try:
        with pa.memory_map(str(path)) as source:
            reader = ipc.open_file(source)
            for i in range(reader.num_record_batches):
                table = pa.Table.from_batches([reader.get_batch(i)])
                k = table.column(_POS).to_numpy()
                part = np.clip(np.floor((k.astype(np.float64) - float(lo)) * scale), 0, m - 1).astype(np.int64)
                for s, rows in grouped(table, part, m):
                    buffers.add(s, rows)
    finally:
        buffers.close(m)
    path.unlink()
    bounds = [lo + (hi - lo) * s // m for s in range(m + 1)]
    return [(sub_dir / f"{s:05d}.arrow", buffers.written[s], buffers.written_rows[s], bounds[s], bounds[s + 1])
            for s in range(m)]


class _SpillBuffers:
    """Rows waiting for their spill file, flushed in large record batches (small IPC batches are slow)."""

    def __init__(self, spill_dir: Path, schema: pa.Schema, n_spill: int) -> None:
        self.dir = spill_dir
        self.schema = schema
        self.options = ipc.IpcWriteOptions(compression="lz4" if pa.Codec.is_available("lz4") else None)
        self.writers: dict[int, ipc.RecordBatchFileWriter] = {}
        self.pending: dict[int, list[pa.Table]] = {}
        self.rows: dict[int, int] = {}
        self.bytes: dict[int, int] = {}
        self.flush_bytes = max(1 << 20, SPILL_BUFFER_BYTES // max(n_spill, 1))
        self.total_bytes = 0
        self.written = [0] * n_spill  # bytes of the rows written to each file (Arrow, uncompressed) ...
        self.written_rows = [0] * n_spill  # ... and their number

    def add(self, b: int, table: pa.Table) -> None:
        table = _compact(table)  # a slice would keep its whole parent batch alive while it waits
        self.pending.setdefault(b, []).append(table)
        self.rows[b] = self.rows.get(b, 0) + table.num_rows
        size = table.nbytes
        self.bytes[b] = self.bytes.get(b, 0) + size
        self.total_bytes += size
        if self.rows[b] >= SPILL_FLUSH_ROWS or self.bytes[b] >= self.flush_bytes:
            self.flush(b)
        while self.total_bytes > SPILL_BUFFER_BYTES:
            self.flush(max(self.bytes, key=self.bytes.__getitem__))

    def flush(self, b: int) -> None:
        parts = self.pending.pop(b, [])
        self.total_bytes -= self.bytes.pop(b, 0)
        self.rows.pop(b, None)
        if not parts:
            return
        if b not in self.writers:
            self.writers[b] = ipc.new_file(self.dir / f"{b:05d}.arrow", self.schema, options=self.options)
        table = pa.concat_tables(parts).combine_chunks()
        self.writers[b].write_table(table)
        self.written[b] += table.nbytes
        self.written_rows[b] += table.num_rows

    def close(self, n_spill: int) -> None:
        for b in list(self.pending):
            self.flush(b)
        for b in range(n_spill):  # every spill file exists, even if empty, so pass two is uniform
            if b not in self.writers:
                self.writers[b] = ipc.new_file(self.dir / f"{b:05d}.arrow", self.schema, options=self.options)
        for w in self.writers.values():
            w.close()


def _compact(table: pa.Table) -> pa.Table:
    """A copy of a (sliced) table that owns only its own rows' buffers."""
    cols = [pa.concat_arrays(col.chunks) if col.num_chunks else pa.array([], col.type) for col in table.columns]
    return pa.Table.from_arrays(cols, schema=table.schema)


def _scatter(plan: MixturePlan, spill_schema: pa.Schema, schema: pa.Schema, n_spill: int,
             spill_dir: Path) -> list[tuple[int, int]]:
    """Pass one; returns (bytes, rows) of each spill file's rows."""
    buffers = _SpillBuffers(spill_dir, spill_schema, n_spill)
    try:
        for (start, repeat), path in zip(plan.repeats(), plan.scan.files):
            local = np.flatnonzero(repeat)
            if local.size:
                key = order_keys(plan.config.seed, start + local)
                _scatter_file(Path(path), local, key, repeat[local], schema, n_spill, buffers)
    finally:
        buffers.close(n_spill)
    return list(zip(buffers.written, buffers.written_rows))


def _scatter_file(
    path: Path,
    local: np.ndarray,
    key: np.ndarray,
    repeat: np.ndarray,
    schema: pa.Schema,
    n_spill: int,
    buffers: _SpillBuffers,
) -> None:
    """Send the selected rows of one input shard to their spill buffers, reading only row groups that hold some."""
    pf = pq.ParquetFile(path)
    md = pf.metadata
    rg_start = np.concatenate([[0], np.cumsum([md.row_group(i).num_rows for i in range(md.num_row_groups)])])
    rg_of = np.searchsorted(rg_start, local, side="right") - 1
    wanted = np.unique(rg_of)
    # position of each selected row in the back-to-back read of the wanted row groups
    sizes = rg_start[wanted + 1] - rg_start[wanted]
    virtual_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    virtual = virtual_start[np.searchsorted(wanted, rg_of)] + (local - rg_start[rg_of])
    read = 0
    for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=[int(g) for g in wanted], use_threads=True):
        n = batch.num_rows
        a, b = np.searchsorted(virtual, [read, read + n])
        read += n
        if b == a:
            continue
        k = key[a:b]
        spill = ((k >> np.uint64(32)) * np.uint64(n_spill) >> np.uint64(32)).astype(np.int64)  # key range of each file
        order = group_order(spill, n_spill)  # one take both selects the rows and groups them by spill file
        table = pa.Table.from_batches([batch]).take(pa.array((virtual[a:b] - (read - n))[order]))
        table = table.append_column(REPEAT_COLUMN, pa.array(repeat[a:b][order], REPEAT_TYPE))
        table = conform(table, schema, strict=False)
        table = table.append_column(_POS, pa.array(k[order], pa.uint64()))
        for s, rows in runs(table, spill[order]):
            buffers.add(s, rows)


def _gather(path: Path, carry: pa.Table | None, shard_rows: int, written: int, writer: Any,
            last: bool) -> tuple[pa.Table | None, int]:
    """Write one spill file's rows in key order after the rows carried from the file before, a shard at a time;
    returns the rows of the unfinished shard (written too when this is the last file) and the shards written."""
    with pa.memory_map(str(path)) as source:
        table = ipc.open_file(source).read_all()  # mapped: a shard's rows are copied when it is taken
    order = np.argsort(table.column(_POS).to_numpy(), kind="stable")
    table = table.drop_columns([_POS])
    at = 0
    if carry is not None:  # the shard begun in the file before
        at = min(shard_rows - carry.num_rows, len(order))
        carry = pa.concat_tables([carry, table.take(pa.array(order[:at]))])
        if carry.num_rows < shard_rows and not last:
            return carry, written
        writer.write(carry.combine_chunks(), index=written)
        written += 1
    while len(order) - at >= shard_rows:
        writer.write(table.take(pa.array(order[at:at + shard_rows])), index=written)
        written += 1
        at += shard_rows
    if at < len(order):
        rest = table.take(pa.array(order[at:]))
        if not last:
            return rest, written
        writer.write(rest, index=written)
        written += 1
    return None, written
