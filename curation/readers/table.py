"""Readers of table files (JSON Lines, JSON arrays, Parquet, Arrow files of ``save_to_disk``).

:class:`TableReader` plans a source into row (or element) ranges of a fixed
size and reads one range into an Arrow table; subclasses only say which files
they take and how a table becomes manifest rows (:meth:`TableReader.convert`).
The generic conversion (``jsonl``, ``parquet``, ``hf``) maps the recipe's
``text_column``, ``image_column``, ``turns_column`` and ``id_column``; the other
columns go to ``meta`` as JSON.

Keys: the ``id_column`` value when the row has one, else a content hash of
the source row (``curation.readers.keys``): never a position.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.readers import jsonparse as J
from curation.readers.base import ChunkSpec, Fingerprint, Reader, SourceContext
from curation.readers.columns import constant, media_from_cells, turns_from_cells
from curation.readers.keys import array_hash, hex_keys, table_hash
from curation.readers.rows import assemble, concat, meta_json
from curation.readers.tabular import (
    TableFile,
    find_tables,
    read_table_range,
    table_rows,
)
from manifests import storage
from manifests.errors import RecipeError


@dataclass(frozen=True)
class TableSpec(ChunkSpec):
    file: str
    format: str  # jsonl | json (an array) | parquet | hf
    start: int  # first row, or first byte for JSON
    end: int  # row after the last, or byte after the last element
    first: int  # ordinal of the first row/line/element in the file
    count: int  # rows, lines or elements planned

    def inputs(self) -> int:
        return self.count


def json_layout(path: str) -> str:
    """``json`` for a top-level JSON array, ``jsonl`` for JSON Lines."""
    return "json" if J.first_byte(path) == b"[" else "jsonl"


class TableReader(Reader):
    """Shared planning and range reading; subclasses implement ``convert``."""

    spec_type = TableSpec
    kinds = frozenset({"image_text", "text"})
    #: table formats this reader takes (as tabular.find_tables names them, plus json)
    formats: ClassVar[frozenset[str]] = frozenset({"jsonl", "json", "parquet", "hf"})

    # -- files ---------------------------------------------------------------
    def files(self, ctx: SourceContext) -> list[TableFile]:
        if ctx.source.hub is not None:
            return _hub_files(ctx)
        try:
            found = find_tables(list(ctx.paths), "auto", ctx.source.split)
        except RecipeError as exc:
            raise ctx.error(str(exc)) from None
        out = []
        for tf in found:
            fmt = tf.format
            if fmt == "jsonl" and (storage.is_uri(tf.path) or os.path.isfile(tf.path)):
                fmt = json_layout(tf.path)
            if fmt in self.formats:
                out.append(TableFile(tf.path, fmt))
        if not out:
            raise ctx.error(f"no {'/'.join(sorted(self.formats))} table found for format {self.name!r}")
        return out

    def check_columns(self, ctx: SourceContext, names: list[str], path: str) -> None:
        """RecipeError naming the recipe field whose column a table lacks."""
        src = ctx.source
        for fld in ("text_column", "image_column", "turns_column", "id_column"):
            col = getattr(src, fld)
            if col is not None and col not in names:
                raise ctx.error(f"{path} has no column {col!r} (columns: {', '.join(names)})", fld)

    # -- planning --------------------------------------------------------------
    def plan(self, ctx: SourceContext) -> tuple[list[ChunkSpec], str, int]:
        fp = Fingerprint(ctx.kind, self.name)
        specs: list[ChunkSpec] = []
        pos0 = 0
        remaining = ctx.limit
        size = ctx.chunk
        for tf in self.files(ctx):
            fp.file(tf.path)
            if remaining is not None and remaining <= 0:
                break
            try:
                if tf.format in ("parquet", "hf"):
                    self.check_columns(ctx, table_schema(tf).names, tf.path)
                    n = table_rows(tf)
                    if remaining is not None:
                        n = min(n, remaining)
                    for r0 in range(0, n, size):
                        specs.append(TableSpec(ctx.index, pos0 + r0, tf.path, tf.format, r0, min(n, r0 + size), r0,
                                               min(size, n - r0)))
                else:
                    n = self._plan_json(ctx, tf, pos0, size, remaining, specs)
            except (OSError, pa.ArrowException) as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
                raise ctx.error(f"cannot read {tf.path}: {detail}") from None
            pos0 += n
            if remaining is not None:
                remaining -= n
        if not specs:
            raise ctx.error("the source's tables hold no rows")
        return specs, fp.hexdigest(), pos0

    def _plan_json(self, ctx, tf: TableFile, pos0: int, size: int, remaining: int | None, specs: list) -> int:
        if tf.format == "json":
            seps, n = J.array_separators(tf.path, size)  # seps[k]: before element k*size; seps[-1]: after the last
            if remaining is not None and remaining < n:
                n = remaining
                seps, _ = J.array_separators(tf.path, 1)  # a limit that cuts a chunk needs the exact separator
                seps = np.concatenate([seps[0:n:size], [seps[n]]])
            for k, e0 in enumerate(range(0, n, size)):
                e1 = min(n, e0 + size)
                specs.append(TableSpec(ctx.index, pos0 + e0, tf.path, "json", int(seps[k]) + 1, int(seps[k + 1]), e0,
                                       e1 - e0))
            return n
        cuts, n, end = J.line_cuts(tf.path, size, remaining)
        for k, l0 in enumerate(range(0, n, size)):
            l1 = min(n, l0 + size)
            specs.append(TableSpec(ctx.index, pos0 + l0, tf.path, "jsonl", int(cuts[k]),
                                   int(cuts[k + 1]) if k + 1 < len(cuts) else end, l0, l1 - l0))
        return n

    # -- reading ---------------------------------------------------------------
    def read(self, ctx: SourceContext, spec: TableSpec) -> pa.Table:
        base = os.path.dirname(spec.file)  # relative media paths resolve against image_root/video_root, else this
        if spec.format in ("parquet", "hf"):
            table = read_table_range(TableFile(spec.file, spec.format), spec.start, spec.end - spec.start)
            n = table.num_rows
            ordinal = np.arange(spec.first, spec.first + n, dtype=np.int64)
            uris = _uris(spec.file + ":", ordinal)
            return self.convert(ctx, table, uris, spec.pos0 + np.arange(n), base)
        buf = J.read_bytes(spec.file, spec.start, spec.end)
        parsed = J.parse_range(buf, spec.format == "json")
        ordinal = spec.first + parsed.index
        sep = "[" if spec.format == "json" else ":"
        shown = ordinal if spec.format == "json" else ordinal + 1
        uris = _uris(spec.file + sep, shown, "]" if spec.format == "json" else "")
        parts = []
        if parsed.table.num_rows:
            parts.append(self.convert(ctx, parsed.table, uris, spec.pos0 + parsed.index, base))
        if parsed.failed:
            parts.append(_failed_rows(ctx, spec, parsed.failed, sep))
        return concat(parts)

    def convert(self, ctx: SourceContext, table: pa.Table, uris: pa.Array, pos: np.ndarray, base: str) -> pa.Table:
        raise NotImplementedError

    # the two methods below let the Ray engine isolate a row whose reading kills its worker
    # (curation.engine.ray_engine); an input of a chunk is a row (Parquet, Arrow), a line or an array element
    @staticmethod
    def narrow(spec: TableSpec, lo: int, hi: int) -> TableSpec:
        """The rows ``[lo, hi)`` of a chunk as a chunk of their own. Parquet and Arrow ranges are rows (no I/O);
        a JSON range is bytes, so its line (element) boundaries come from a scan of the chunk's bytes, as
        planning finds them: nothing is parsed."""
        hi = min(hi, spec.count)
        lo = min(lo, hi)
        moved = dict(pos0=spec.pos0 + lo, first=spec.first + lo, count=hi - lo)
        if spec.format in ("parquet", "hf"):
            return replace(spec, start=spec.start + lo, end=spec.start + hi, **moved)
        starts, ends = _element_bounds(spec)
        a = spec.start + int(starts[lo]) if lo < len(starts) else spec.end
        b = spec.start + int(ends[hi - 1]) if lo < hi <= len(ends) else a
        return replace(spec, start=a, end=b, **moved)

    def unread(self, ctx: SourceContext, spec: TableSpec, reason: str, detail: str) -> pa.Table:
        """The chunk's rows without parsing or decoding them, every one dropped at stage ``read`` with ``reason``.

        A row's key needs its content (an ``id_column`` value, or a hash of the parsed row), which is what
        could not be read, so an unread row cannot have the id a read gives it; it gets the nearest stable
        one. A JSON line or element is keyed as one that fails to parse (``raw:`` and a hash of its bytes:
        the chunk's bytes are read, never parsed; blank lines give no row, as in a read); a Parquet or Arrow
        row, whose bytes are not its own, by its ordinal in the source (``pos:<n>``). Its uri and position are
        the ones a read gives it."""
        sep = "[" if spec.format == "json" else ":"
        if spec.format in ("parquet", "hf"):
            ordinal = np.arange(spec.first, spec.first + spec.count, dtype=np.int64)
            pos = spec.pos0 + np.arange(spec.count, dtype=np.int64)
            keys = [f"pos:{p}" for p in pos.tolist()]
            return assemble(ctx, keys, _uris(spec.file + ":", ordinal), pos, fail_reason=[reason] * spec.count,
                            fail_detail=[detail] * spec.count)
        buf = J.read_bytes(spec.file, spec.start, spec.end)
        starts, ends = J.element_bounds_in(buf, spec.format == "json")
        failed = [(k, reason, detail, buf[a:b]) for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist()))
                  if k < spec.count and buf[a:b].strip(b" \t\r\n")]
        return _failed_rows(ctx, spec, failed, sep) if failed else assemble(ctx, [], [], [])


def _element_bounds(spec: TableSpec) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the lines or array elements of a JSON range, relative to its start (its bytes scanned)."""
    return J.element_bounds_in(J.read_bytes(spec.file, spec.start, spec.end), spec.format == "json")


def _uris(prefix: str, numbers: np.ndarray, suffix: str = "") -> pa.Array:
    n = len(numbers)
    return pc.binary_join_element_wise(constant(prefix, n), pa.array(numbers, pa.int64()).cast(pa.string()),
                                       constant(suffix, n), "")


def _failed_rows(ctx: SourceContext, spec: TableSpec, failed: list, sep: str) -> pa.Table:
    """Ledger rows for elements that are not JSON objects, keyed by a hash of their bytes."""
    idx = np.array([f[0] for f in failed], np.int64)
    raw = pa.array([f[3] for f in failed], pa.binary())
    keys = hex_keys(array_hash(raw), "raw:")
    ordinal = spec.first + idx
    shown = ordinal if spec.format == "json" else ordinal + 1
    uris = _uris(spec.file + sep, shown, "]" if spec.format == "json" else "")
    what = "element" if spec.format == "json" else "line"
    details = [f"{what} {s}: {d}" for s, (_, _, d, _) in zip(shown.tolist(), failed)]
    return assemble(ctx, keys, uris, spec.pos0 + idx, fail_reason=[f[1] for f in failed], fail_detail=details)


def row_keys(table: pa.Table, id_column: str | None, hash_columns: list[str] | None = None) -> pa.Array:
    """``id:<value>`` from the id column where it has a value, else ``sha:<content hash>``."""
    content = hex_keys(table_hash(table, hash_columns))
    if id_column is None or id_column not in table.column_names:
        return content
    col = table.column(id_column)
    if pa.types.is_struct(col.type) or pa.types.is_list(col.type):
        return content
    ids = pc.binary_join_element_wise(pa.scalar("id:"), pc.cast(col, pa.string()), "")
    return pc.coalesce(ids, content)


def table_schema(tf: TableFile) -> pa.Schema:
    """The Arrow schema of a Parquet or Arrow table file (format detection reads only this)."""
    if tf.format == "parquet":
        from curation.readers.tabular import _parquet_source

        return pq.read_schema(_parquet_source(tf.path))
    with pa.memory_map(tf.path) as src:
        try:
            return pa.ipc.open_stream(src).schema
        except pa.ArrowInvalid:
            src.seek(0)
            return pa.ipc.open_file(src).schema


def _hub_files(ctx: SourceContext) -> list[TableFile]:
    """Arrow cache files of ``datasets.load_dataset(hub)``: a hub id (network) or a local dataset folder."""
    import datasets

    src = ctx.source
    target = src.hub
    local = ctx.resolve(target)
    if os.path.exists(local):
        target = local
    try:
        ds = datasets.load_dataset(target, src.hub_config, split=src.split or "train")
    except Exception as exc:  # noqa: BLE001 - hub/network/format problems are the user's to fix
        raise ctx.error(f"cannot load {src.hub!r}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", "hub") from None
    files = [f["filename"] for f in ds.cache_files]
    if not files:
        raise ctx.error(f"{src.hub!r} loaded in memory only; save it to disk and use path:", "hub")
    return [TableFile(f, "hf") for f in files]


class GenericTable(TableReader):
    """The recipe's column names mapped onto manifest columns."""

    def plan(self, ctx: SourceContext) -> tuple[list[ChunkSpec], str, int]:
        if ctx.kind == "image_text" and ctx.source.image_column is None:
            raise ctx.error(f"image_text sources of format {self.name!r} need image_column", "image_column")
        return super().plan(ctx)

    def convert(self, ctx: SourceContext, table: pa.Table, uris: pa.Array, pos: np.ndarray, base: str) -> pa.Table:
        src = ctx.source
        n = table.num_rows
        names = table.column_names
        used = {c for c in (src.text_column, src.image_column, src.turns_column, src.id_column) if c}
        keys = row_keys(table, src.id_column)

        def col(name: str | None) -> pa.Array | None:
            return table.column(name).combine_chunks() if name and name in names else None

        if ctx.kind == "text":
            name = src.text_column or "text"
            used.add(name)
            raw = col(name)
            text = raw.cast(pa.string()) if raw is not None and (pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)) else None
            meta = meta_json(table, used)
            missing = pc.is_null(text) if text is not None else pa.array(np.ones(n, bool))
            reason = pc.if_else(missing, pa.scalar("missing_text"), pa.scalar(None, pa.string()))
            detail = pc.binary_join_element_wise(uris, pa.scalar(f": column {name!r} holds no text"), "")
            return assemble(ctx, keys, uris, pos, text=text, meta=meta, fail_reason=reason, fail_detail=detail)
        media = media_from_cells(col(src.image_column), root=ctx.image_root or base) if col(src.image_column) is not None else None
        text_raw = col(src.text_column)
        text = text_raw.cast(pa.string()) if text_raw is not None else None
        turns = turns_from_cells(col(src.turns_column)) if col(src.turns_column) is not None else None
        meta = meta_json(table, used)
        has = pa.array(np.zeros(n, bool))
        if text is not None:
            has = pc.or_(has, pc.is_valid(text))
        if turns is not None:
            has = pc.or_(has, pc.is_valid(turns))
        reason = pc.if_else(has, pa.scalar(None, pa.string()), pa.scalar("missing_text"))
        detail = pc.binary_join_element_wise(uris, pa.scalar(f": no text in {src.text_column or src.turns_column!r}"), "")
        return assemble(ctx, keys, uris, pos, media=media, text=text, turns=turns, meta=meta,
                        fail_reason=reason, fail_detail=detail)
