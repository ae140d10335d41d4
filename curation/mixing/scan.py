"""One streaming pass over the inputs' metadata: group, weight, keep, cap and tokens per row.

The per-row codes (about 30 bytes a row) are spilled to a temporary folder, one
Arrow file per input shard, and read back shard by shard by the plan and the
writer, so memory does not grow with the rows; the rows themselves are read
again, batch by batch, only when the output is written.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

from curation.mixing.config import TOKEN_FEATURES, MixtureConfig, Rule
from curation.mixing.features import batch_features, match_mask, parquet_columns
from manifests.errors import ManifestError

#: rows per metadata batch: large enough for vectorized work, small enough to stay flat in memory
SCAN_BATCH_ROWS = 65_536


@dataclass
class InputManifest:
    """An opened input and the facts recorded about it in the mixture's provenance."""

    index: int
    path: Path
    manifest: Any  # manifests.reader.Manifest
    sources: list[str] | None  # restriction from the mixture file, or None for all


#: the per-row codes a scan spills, and their types
ROW_COLUMNS = {"source": pa.int32(), "modality": pa.int32(), "category": pa.int32(), "group": pa.int32(),
               "weight": pa.float32(), "keep": pa.bool_(), "cap": pa.int16(), "tokens": pa.int64()}


@dataclass
class ScanResult:
    """Per-row codes in scan order (inputs in file order, shards in manifest order, rows in shard order), spilled
    to one Arrow file per shard; :meth:`shards` streams them. ``source``, ``group``, ... load a whole column (for
    notebooks and small mixtures: a job never does)."""

    files: list[Path]
    file_rows: np.ndarray  # rows per shard file
    file_bytes: np.ndarray  # uncompressed bytes per shard file (Parquet footer), to size output shards
    source_names: list[str]
    modality_names: list[str]
    group_names: list[str]
    category_names: list[str] | None
    row_files: list[Path]  # the spilled codes of each shard
    has_tokens: bool
    source_rows: np.ndarray  # rows per source code
    source_in_mixture: np.ndarray  # bool per source code: some of its rows are in a group
    rule_rows: list[int] = field(default_factory=list)  # rows each rule matched
    unassigned_rows: int = 0  # rows that matched no category
    excluded_rows: int = 0  # rows in no group
    spill: Any = None  # the TemporaryDirectory holding row_files (removed with this object)

    def shards(self, columns: list[str] | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """(first scan index, {column: array}) for each shard in scan order."""
        start = 0
        for path, n in zip(self.row_files, self.file_rows.tolist()):
            t = feather.read_table(path, columns=columns, memory_map=False)
            yield start, {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
            start += n

    def column(self, name: str) -> np.ndarray:
        parts = [cols[name] for _, cols in self.shards([name])]
        return np.concatenate(parts) if parts else np.zeros(0, ROW_COLUMNS[name].to_pandas_dtype())

    @property
    def rows(self) -> int:
        return int(self.file_rows.sum())

    source = property(lambda self: self.column("source"))
    modality = property(lambda self: self.column("modality"))
    category = property(lambda self: self.column("category") if self.category_names is not None else None)
    group = property(lambda self: self.column("group"))
    weight = property(lambda self: self.column("weight"))
    keep = property(lambda self: self.column("keep"))
    cap = property(lambda self: self.column("cap"))
    tokens = property(lambda self: self.column("tokens") if self.has_tokens else None)


class _Codes:
    """Stable integer codes for strings seen across batches (dictionary-encoded, never per row in Python)."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or [])
        self._index = {n: i for i, n in enumerate(self.names)}

    def encode(self, col: pa.Array | pa.ChunkedArray) -> np.ndarray:
        enc = pc.dictionary_encode(col)
        if isinstance(enc, pa.ChunkedArray):
            enc = enc.combine_chunks()
        lookup = np.array([self._code(v) for v in enc.dictionary.to_pylist()], dtype=np.int32)
        idx = enc.indices.to_numpy(zero_copy_only=False)
        return lookup[idx] if len(lookup) else np.zeros(0, dtype=np.int32)

    def _code(self, name: str) -> int:
        if name not in self._index:
            self._index[name] = len(self.names)
            self.names.append(name)
        return self._index[name]


def needed_features(cfg: MixtureConfig) -> set[str]:
    return set().union(*(m.features() for m in cfg.matches()))


def scan_inputs(
    cfg: MixtureConfig,
    inputs: list[InputManifest],
    token_counter: Any | None,
    known_sources: list[str],
) -> ScanResult:
    """Read metadata leaves of every input shard, batch by batch, into compact per-row arrays."""
    rules: list[Rule] = cfg.all_rules()
    feats = needed_features(cfg)
    numeric = feats - set(TOKEN_FEATURES)
    matches = cfg.matches()
    ext_cols = sorted({c for m in matches for c in (m.columns or {})})
    uses_meta = any(m.meta for m in matches)

    level = cfg.group_level
    shares = cfg.shares
    group_names = list(shares)
    group_code = {name: i for i, name in enumerate(group_names)}
    category_names = list(cfg.categories) if cfg.categories is not None else None

    sources = _Codes(known_sources)
    modalities = _Codes()
    files: list[Path] = []
    file_rows: list[int] = []
    file_bytes: list[int] = []
    spill = tempfile.TemporaryDirectory(prefix="smolcurate-mix-scan-")
    row_files: list[Path] = []
    source_rows = np.zeros(0, np.int64)
    excluded = 0
    source_in = np.zeros(0, bool)
    names = [c for c in ROW_COLUMNS if (c != "category" or category_names is not None)
             and (c != "tokens" or token_counter is not None)]
    row_schema = pa.schema([(c, ROW_COLUMNS[c]) for c in names])
    rule_rows = [0] * len(rules)
    unassigned = 0
    cap_of_source: dict[int, int] = {}

    for item in inputs:
        schema = item.manifest.schema
        cols = parquet_columns(numeric, [c for c in ext_cols if c in schema.names], uses_meta)
        if token_counter is not None:
            cols = sorted(set(cols) | set(token_counter.parquet_columns(item.index, schema)))
        allowed = pa.array(item.sources, pa.string()) if item.sources is not None else None
        for path in item.manifest.check_files(item.manifest.info["shards"]):
            pf = _open_shard(path)
            md = pf.metadata
            files.append(Path(path))
            file_rows.append(md.num_rows)
            file_bytes.append(sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups)))
            parts: dict[str, list[np.ndarray]] = {c: [] for c in names}
            for batch in pf.iter_batches(batch_size=SCAN_BATCH_ROWS, columns=cols, use_threads=True):
                batch = _add_missing(batch, ext_cols)
                n = batch.num_rows
                src = sources.encode(batch.column("source"))
                mod = modalities.encode(batch.column("modality"))
                f = batch_features(batch, numeric)
                if token_counter is not None:
                    f.update(token_counter.count(batch, item.index))
                cat = None
                if category_names is not None:
                    cat = np.full(n, -1, dtype=np.int32)
                    for ci, cmatch in enumerate(cfg.categories.values()):  # type: ignore[union-attr]
                        hit = match_mask(cmatch, batch, f) & (cat < 0)
                        cat[hit] = ci
                    unassigned += int((cat < 0).sum())
                if level == "source":
                    lookup = np.array([group_code.get(s, -1) for s in sources.names], dtype=np.int32)
                    group = lookup[src]
                elif level == "modality":
                    lookup = np.array([group_code.get(m, -1) for m in modalities.names], dtype=np.int32)
                    group = lookup[mod]
                else:
                    lookup = np.array([group_code.get(c, -1) for c in category_names], dtype=np.int32)  # type: ignore[union-attr]
                    group = np.where(cat >= 0, lookup[np.maximum(cat, 0)], -1).astype(np.int32)  # type: ignore[operator]
                if allowed is not None:
                    inside = pc.is_in(batch.column("source"), value_set=allowed).to_numpy(zero_copy_only=False)
                    group = np.where(inside, group, -1).astype(np.int32)
                for s in np.unique(src):
                    if int(s) not in cap_of_source:
                        cap_of_source[int(s)] = cfg.epochs_for(sources.names[int(s)])
                cap_lookup = np.array([cap_of_source.get(i, 1) for i in range(len(sources.names))], dtype=np.int64)
                cap = cap_lookup[src]
                weight = np.ones(n, dtype=np.float32)
                keep = np.zeros(n, dtype=bool)
                for ri, rule in enumerate(rules):
                    hit = match_mask(rule.match, batch, f, cat, category_names)
                    rule_rows[ri] += int(hit.sum())
                    if rule.weight != 1.0:
                        weight[hit] *= rule.weight
                    if rule.keep:
                        keep |= hit
                    if rule.max_epochs is not None:
                        cap[hit] = rule.max_epochs
                row = {"source": src, "modality": mod, "category": cat, "group": group, "weight": weight, "keep": keep,
                       "cap": cap, "tokens": f.get("tokens")}
                for c in names:
                    parts[c].append(np.asarray(row[c]).astype(ROW_COLUMNS[c].to_pandas_dtype(), copy=False))
                grow = len(sources.names) - len(source_rows)
                source_rows = np.concatenate([source_rows, np.zeros(grow, np.int64)])
                source_in = np.concatenate([source_in, np.zeros(grow, bool)])
                source_rows += np.bincount(src, minlength=len(sources.names))
                source_in[np.unique(src[group >= 0])] = True
                excluded += int(np.count_nonzero(group < 0))
            path = Path(spill.name) / f"{len(row_files):06d}.arrow"
            codes = {c: np.concatenate(parts[c]) if parts[c] else np.zeros(0, ROW_COLUMNS[c].to_pandas_dtype()) for c in names}
            feather.write_feather(pa.table(codes, schema=row_schema), path, compression="uncompressed")
            row_files.append(path)

    grow = len(sources.names) - len(source_rows)
    return ScanResult(
        files=files,
        file_rows=np.asarray(file_rows, dtype=np.int64),
        file_bytes=np.asarray(file_bytes, dtype=np.int64),
        source_names=sources.names,
        modality_names=modalities.names,
        group_names=group_names,
        category_names=category_names,
        row_files=row_files,
        has_tokens=token_counter is not None,
        source_rows=np.concatenate([source_rows, np.zeros(grow, np.int64)]),
        source_in_mixture=np.concatenate([source_in, np.zeros(grow, bool)]),
        rule_rows=rule_rows,
        unassigned_rows=unassigned,
        excluded_rows=excluded,
        spill=spill,
    )


def _open_shard(path: str) -> pq.ParquetFile:
    """A shard's reader; a file that is not Parquet is a one-line ManifestError naming it."""
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"{path}: not a readable Parquet shard ({str(exc).splitlines()[0]})") from None


def _add_missing(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    """Null columns for extension columns an input lacks, so a rule on them simply does not match."""
    missing = [c for c in columns if c not in batch.schema.names]
    if not missing:
        return batch
    arrays = list(batch.columns) + [pa.nulls(batch.num_rows, pa.float64()) for _ in missing]
    return pa.RecordBatch.from_arrays(arrays, names=list(batch.schema.names) + missing)
