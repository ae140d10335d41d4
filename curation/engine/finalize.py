"""Global stages after every chunk is staged: unique ids, dedup resolve, final shards, commit.

Everything here reads the staging area chunk by chunk in chunk order, so the
manifest's rows and shard boundaries depend only on the recipe and the inputs,
never on chunk timing, engine or worker count.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.layout import RESULT_SCHEMA
from curation.engine.chunk import STAGED_LEDGER_SCHEMA
from curation.engine.staging import Staging
from curation.filters import operator_columns, source_operators
from curation.readers import PRIVATE_KEY, PRIVATE_POS, PRIVATE_URI, SourcePlan, reader_class
from curation.recipe import Recipe
from manifests.fsutil import atomic_write
from manifests.memory import release_unused
from manifests.schema import CORE_NAMES, build_schema, conform, make_id
from manifests.writer import ManifestWriter

DEDUP_RESULT = "dedup-result.json"  # {chunk: its part of the answer}, written once the answer is complete


# --------------------------------------------------------------------------- ids


def id_fixups(recipe: Recipe, plans: list[SourcePlan], staging: Staging, chunk_of: list[int]) -> dict[int, pl.DataFrame]:
    """New ids for inputs whose key repeats within a source (identical table rows, repeated id values).

    The first occurrence (smallest position) keeps ``make_id(source, key)``; the
    n-th repeat gets ``make_id(source, key + "#n")``. Only chunks of formats whose
    reader can repeat keys (``Reader.unique_keys`` false: tables, tar shards) are
    scanned. Returns {chunk: DataFrame(_pos, new_id)}.
    """
    table_chunks = [k for k, src in enumerate(chunk_of)
                    if plans[src].chunks and not reader_class(plans[src].chunks[0]["type"]).unique_keys]
    if not table_chunks:
        return {}
    paths = [(k, path) for k in table_chunks for path in (staging.kept_path(k), staging.dropped_path(k))]
    # pass 1 finds the 64-bit id hashes that repeat, spilled to disk by their top bits so that the driver holds one
    # bucket of hashes at a time, not one per row; pass 2 reads the rows whose hash repeats, and the exact
    # comparison below decides among them
    repeated = pl.Series("_h", _repeated_hashes([path for _, path in paths], staging.path("id-hashes")), dtype=pl.UInt64)
    if repeated.len() == 0:
        return {}
    frames = [pl.scan_parquet(path).filter(pl.col("id").hash(seed=0).is_in(repeated.implode()))
              .select(["source", "id", PRIVATE_POS, PRIVATE_KEY]).with_columns(pl.lit(k).alias("_chunk")) for k, path in paths]
    ids = pl.concat(frames).collect()
    rep = ids.filter(pl.col("id").is_duplicated())
    if rep.height == 0:
        return {}
    rep = rep.sort(["id", PRIVATE_POS]).with_columns(pl.int_range(pl.len()).over("id").alias("_occ")).filter(pl.col("_occ") > 0)
    new = [make_id(s, f"{key}#{occ}") for s, key, occ in zip(rep["source"], rep[PRIVATE_KEY], rep["_occ"])]
    rep = rep.with_columns(pl.Series("_new_id", new, dtype=pl.Utf8))
    return {int(k): g.select([PRIVATE_POS, "_new_id"]) for (k,), g in rep.group_by("_chunk")}


#: id hashes per spill bucket of id_fixups (8 bytes each): what the driver holds at once, whatever the rows
HASH_BUCKET_ROWS = 4_000_000


def _repeated_hashes(paths: list[Path], spill: Path) -> np.ndarray:
    """The distinct ``id`` hashes (polars, seed 0) that occur more than once over the files, sorted."""
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    bits = max(0, int(np.ceil(np.log2(max(rows, 1) / HASH_BUCKET_ROWS))))
    hashes = (pl.read_parquet(p, columns=["id"])["id"].hash(seed=0).to_numpy() for p in paths)
    if bits == 0:  # one bucket: in memory
        return _repeats(np.concatenate(list(hashes)))
    shutil.rmtree(spill, ignore_errors=True)
    spill.mkdir(parents=True)
    files = [open(spill / f"b-{b:04d}.u64", "wb") for b in range(1 << bits)]
    try:
        for h in hashes:
            bucket = (h >> np.uint64(64 - bits)).astype(np.int64)
            order = np.argsort(bucket, kind="stable")
            h, bounds = h[order], np.searchsorted(bucket[order], np.arange((1 << bits) + 1))
            for b in np.flatnonzero(np.diff(bounds)):  # a loop per bucket, not per row
                files[b].write(h[bounds[b]:bounds[b + 1]].tobytes())
    finally:
        for f in files:
            f.close()
    found = [_repeats(np.fromfile(spill / f"b-{b:04d}.u64", dtype=np.uint64)) for b in range(1 << bits)]
    shutil.rmtree(spill, ignore_errors=True)
    return np.concatenate(found)


def _repeats(hashes: np.ndarray) -> np.ndarray:
    """The distinct values that occur more than once, sorted."""
    hashes = np.sort(hashes)
    return np.unique(hashes[1:][hashes[1:] == hashes[:-1]])


def _apply_ids(table: pa.Table, fix: pl.DataFrame | None) -> pa.Table:
    if fix is None or table.num_rows == 0:
        return table
    at = pc.index_in(table.column(PRIVATE_POS), value_set=fix[PRIVATE_POS].to_arrow().cast(pa.int64()))
    new = fix["_new_id"].to_arrow().cast(pa.string()).take(at)  # null where the position keeps its id
    return table.set_column(table.column_names.index("id"), "id", pc.coalesce(new, table.column("id")))


# --------------------------------------------------------------------------- dedup


class DedupAnswer:
    """The dedup answer staged per chunk (parts under ``dedup/result``): each chunk's finalize reads only its own rows,
    so the driver never holds the whole answer while it writes the shards."""

    def __init__(self, parts: dict[int, Path]) -> None:
        self.parts = parts

    def chunk(self, k: int) -> pa.Table:
        path = self.parts.get(k)
        return pq.read_table(path) if path is not None else RESULT_SCHEMA.empty_table()


def run_dedup(recipe: Recipe, staging: Staging, nchunks: int, fixes: dict[int, pl.DataFrame],
              map_fn: Callable | None = None) -> DedupAnswer | None:
    """Resolve duplicates over every staged chunk (staged per chunk in the staging area, for resumes).

    ``map_fn`` runs the per-partition work in parallel (Ray tasks on the Ray
    engine); the result does not depend on it.
    """
    cfg = recipe.dedup_config()
    if cfg is None:
        return None
    index = staging.path(DEDUP_RESULT)
    if index.is_file():
        return DedupAnswer({int(k): staging.path(rel) for k, rel in json.loads(index.read_text()).items()})
    from curation.dedup import resolve_parts
    from curation.dedup.inputs import input_files

    paths: list[str] = []
    chunk_of_path: dict[str, int] = {}
    for k in range(nchunks):
        path = staging.kept_path(k)
        if k in fixes:  # give dedup the final ids
            fixed = _apply_ids(pq.read_table(path), fixes[k])
            path = staging.path(f"sigs/kept-{k:06d}.parquet")
            atomic_write(path, lambda p, t=fixed: pq.write_table(t, p, compression="zstd"))
        if pq.ParquetFile(path).metadata.num_rows:
            paths.append(str(path))
            chunk_of_path[str(path)] = k
    workdir = staging.path("dedup")
    workdir.mkdir(parents=True, exist_ok=True)
    shared = None if staging.remote is None else f"{staging.remote}/dedup"  # what Ray tasks read: on the store
    parts = resolve_parts(paths, workdir, config=cfg, against=[_local_manifest(a) for a in cfg.against],
                          decontaminate=list(cfg.eval_sets), map_fn=map_fn, shared=shared)
    order = [f.path for f in input_files(paths)]  # the parts are numbered in the order resolve reads its inputs
    answer = {chunk_of_path[order[fi]]: part for fi, part in parts.items()}
    atomic_write(index, lambda p: p.write_text(json.dumps({k: str(v.relative_to(staging.root)) for k, v in answer.items()})))
    return DedupAnswer(answer)


def _local_manifest(path: str) -> str:
    """A ``dedup.against`` manifest on an object store as its verified local mirror (manifests.remote)."""
    from manifests.storage import is_uri

    if not is_uri(path):
        return path
    from manifests.remote import mirror

    return str(mirror(path))


def _split_duplicates(kept: pa.Table, dup: pa.Table | None) -> tuple[pa.Table, pa.Table]:
    """(kept rows with dup_cluster, ledger rows of the duplicates/contaminated) for one chunk; ``dup``: its answer."""
    if dup is None:
        return kept, STAGED_LEDGER_SCHEMA.empty_table()
    n = kept.num_rows
    left = pa.table({"id": kept.column("id"), "_row": pa.array(np.arange(n, dtype=np.int64))})
    joined = left.join(dup, keys="id", join_type="left outer", use_threads=False).sort_by("_row")  # see writer._group_counts
    reason, detail = joined.column("reason"), joined.column("detail")  # an answer part is in RESULT_SCHEMA
    kept = kept.append_column("dup_cluster", joined.column("dup_cluster"))
    drop = pc.is_valid(reason)
    if not pc.any(drop).as_py():
        return kept, STAGED_LEDGER_SCHEMA.empty_table()
    gone = kept.filter(drop)
    gone_reason = reason.filter(drop)
    stage = pc.if_else(pc.starts_with(gone_reason, "contaminat"), "decontaminate", "dedup")
    ledger = pa.table({
        "id": gone.column("id"), "source": gone.column("source"), "stage": stage, "reason": gone_reason,
        "detail": detail.filter(drop), "uri": gone.column(PRIVATE_URI), PRIVATE_POS: gone.column(PRIVATE_POS),
        PRIVATE_KEY: gone.column(PRIVATE_KEY),
    }, schema=STAGED_LEDGER_SCHEMA)
    # a v2 ledger row keeps the row itself (media, text, scores, tokens) and its cluster (the kept row's id)
    for name in gone.column_names:
        if name in ledger.column_names or name == PRIVATE_URI or name.startswith("sig_"):
            continue
        ledger = ledger.append_column(gone.schema.field(name), gone.column(name))
    return kept.filter(pc.invert(drop)), ledger


# --------------------------------------------------------------------------- schema


def manifest_schema(recipe: Recipe, staging: Staging, nchunks: int, dup: DedupAnswer | None) -> pa.Schema:
    """Core columns, then declared operator columns in chain order, then any other staged extension columns."""
    declared: dict[str, pa.DataType] = {}
    for i in range(len(recipe.sources)):
        for name, typ in operator_columns(source_operators(recipe, i)).items():
            declared.setdefault(name, typ)
    seen: dict[str, pa.DataType] = {}
    for k in range(nchunks):
        for f in pq.read_schema(staging.kept_path(k)):
            if f.name.startswith("_") or f.name in CORE_NAMES or f.name in declared or pa.types.is_null(f.type):
                continue
            seen.setdefault(f.name, f.type)
    extra = dict(declared)
    for name in sorted(seen):
        extra[name] = seen[name]
    if dup is not None:
        extra["dup_cluster"] = RESULT_SCHEMA.field("dup_cluster").type
    return build_schema(extra)


# --------------------------------------------------------------------------- writing


class _ShardBuffer:
    """Accumulates rows and writes shards of exactly ``rows`` rows (the last one shorter)."""

    def __init__(self, write: Callable[[pa.Table], Any], rows: int, schema: pa.Schema) -> None:
        self.write = write
        self.rows = rows
        self.schema = schema
        self.parts: list[pa.Table] = []
        self.count = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.parts.append(conform(table, self.schema))
        self.count += table.num_rows
        while self.count >= self.rows:
            merged = pa.concat_tables(self.parts)
            self.write(merged.slice(0, self.rows))
            rest = merged.slice(self.rows)
            self.parts = [rest] if rest.num_rows else []
            self.count = rest.num_rows

    def flush(self) -> None:
        if self.count:
            self.write(pa.concat_tables(self.parts))
        self.parts, self.count = [], 0


def write_manifest(
    recipe: Recipe,
    plans: list[SourcePlan],
    staging: Staging,
    out_dir: str | os.PathLike,
    chunk_of: list[int],
    fixes: dict[int, pl.DataFrame],
    dup: DedupAnswer | None,
    extra: dict[str, Any],
    tick: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Stream staged chunks in order into the manifest and commit it; returns per-source counts."""
    nchunks = len(chunk_of)
    schema = manifest_schema(recipe, staging, nchunks, dup)
    writer = ManifestWriter(out_dir, schema, overwrite=True)
    data = _ShardBuffer(writer.write, recipe.output.shard_rows, schema)
    ledger = _ShardBuffer(writer.write_dropped, recipe.output.shard_rows, writer.ledger_schema)
    read = {p.name: 0 for p in plans}
    reasons: dict[str, dict[tuple[str, str], int]] = {p.name: {} for p in plans}
    kept_n = {p.name: 0 for p in plans}
    for k in range(nchunks):
        fix = fixes.get(k)
        kept = _apply_ids(staging.read_kept(k), fix)
        led = _apply_ids(staging.read_dropped(k), fix)
        kept, dups = _split_duplicates(kept, dup.chunk(k) if dup is not None else None)
        if dups.num_rows:
            led = pa.concat_tables([led, dups], promote_options="default").sort_by(PRIVATE_POS)
        name = plans[chunk_of[k]].name
        read[name] += staging.counts(k)["read"]
        kept_n[name] += kept.num_rows
        if led.num_rows:
            grouped = led.group_by(["stage", "reason"], use_threads=False).aggregate([([], "count_all")])  # see writer._group_counts
            for st, rs, n in zip(*(grouped.column(c).to_pylist() for c in ("stage", "reason", "count_all"))):
                reasons[name][(st, rs)] = reasons[name].get((st, rs), 0) + n
        data.add(kept.drop_columns([c for c in kept.column_names if c.startswith("_")]))
        ledger.add(led.select([c for c in led.column_names if writer.ledger_schema.get_field_index(c) >= 0]))
        del kept, led, dups  # before the next chunk is read: one chunk's tables in memory, not two
        release_unused()
        tick()
    data.flush()
    ledger.flush()
    sources = {p.name: {"read": read[p.name], "fingerprint": p.fingerprint, "kind": p.kind} for p in plans}
    writer.commit(recipe=recipe.resolved(), sources=sources, extra=extra)
    return {p.name: {"kind": p.kind, "read": read[p.name], "kept": kept_n[p.name], "reasons": reasons[p.name]} for p in plans}
