"""The global half of dedup: from signature columns to clusters and drop decisions.

Memory stays bounded because no step holds every signature:

1. **Scatter.** Each input file is read batch by batch; every row emits
   bucket records (an exact hash, a pHash band, a MinHash band, ...) that are
   appended to one of ``partitions`` Arrow IPC files under ``workdir`` chosen by
   the bucket key. A small per-file node table (id, rank attributes) is written
   beside them.
2. **Buckets.** Partitions are processed one at a time (or in parallel through
   ``map_fn``). A bucket is complete inside its partition, so candidate pairs
   come from sorting that file alone. Perceptual candidates are verified there
   (their hashes ride in the records); exact buckets give edges directly;
   MinHash candidates are written out for step 3.
3. **Method phases.** Each registered method (:mod:`curation.dedup.methods`)
   may declare a resolve phase: it receives the candidates of its edge kinds
   and returns verified edges, under its own marker: MinHash checks exact
   Jaccard with an external join (one file's texts in memory at a time),
   pHash confirms its candidates on verification thumbnails, semantic dedup
   clusters embeddings. This module names no method. The candidates are
   spilled by the node block of their first row and given to a phase a run of
   blocks at a time (``CANDIDATE_ROWS``), so no step holds all of them.
4. **Clusters.** Components of the verified edges found out of core, over the
   same node blocks (:mod:`~curation.dedup.components`); the representative of
   each cluster follows the documented rank; the answer lists only rows that
   are in a cluster or contaminated, and is written input file by input file.
   The driver holds a block at a time, never a value per row of the corpus
   (:mod:`~curation.dedup.blocks`).

The phases live in :mod:`~curation.dedup.records` (1), :mod:`~curation.dedup.buckets`
(2), the method modules (3) and :mod:`~curation.dedup.clusters` (4);
this module drives them. Every choice is made from ids and signatures, never from row positions or
partition numbers, so the result does not depend on how the input was split
or on ``partitions``. Each phase leaves a marker, so a killed job resumes
where it stopped and reaches the same result.
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.blocks import Blocks, block_starts
from curation.dedup.buckets import dedupe_by_kind, dedupe_edges
from curation.dedup.buckets import process_partition as _process_partition
from curation.dedup.clusters import clusters as _clusters
from curation.dedup.config import DedupConfig, EvalSetConfig
from curation.dedup.external import CARRY, iter_source, write_source
from curation.dedup.inputs import SigFile, fingerprint, input_files
from curation.dedup.layout import EDGE_SCHEMA, RESULT_SCHEMA, ROLE_AGAINST, ROLE_EVAL, ROLE_NEW, MapFn
from curation.dedup.methods import ResolveContext, methods
from curation.dedup.records import RecordBuilder, Scatter, node_table, partition_name
from curation.dedup.shared import SharedArea
from manifests.errors import UserError
from manifests.fsutil import atomic_write
from manifests.memory import release_unused

__all__ = ["RESULT_SCHEMA", "resolve_duplicates", "resolve_parts"]

#: sub-folders of the shared area (cleared on a store when the inputs change)
SHARED_SUBDIRS = ("buckets", "edges", "semantic")
#: with ``partitions: null``: bucket records per partition aimed at (a task holds ~300 B per record while it
#: sorts one), and the fewest partitions
PARTITION_RECORDS = 2_000_000
MIN_PARTITIONS = 32
#: input files sampled (first batch each) to estimate the records per row
SAMPLE_FILES = 16
#: candidate pairs given to a method's verification at a time (runs of node blocks; ~22 bytes each in memory,
#: plus what the method's join holds per pair)
CANDIDATE_ROWS = 4_000_000


def _serial_map(fn: Callable[[int], Any], items: Sequence[int]) -> list[Any]:
    return [fn(i) for i in items]


def _done(workdir: Path, phase: str, fp: str) -> bool:
    marker = workdir / f"{phase}.done"
    return marker.is_file() and marker.read_text() == fp


def _mark(workdir: Path, phase: str, fp: str) -> None:
    atomic_write(workdir / f"{phase}.done", lambda p: p.write_text(fp))


def resolve_duplicates(
    signatures: Any,
    config: DedupConfig | Mapping[str, Any] | None = None,
    against: Sequence[str | os.PathLike] | None = None,
    decontaminate: Sequence[str | EvalSetConfig | Mapping[str, Any]] | None = None,
    workdir: str | os.PathLike | None = None,
    map_fn: MapFn | None = None,
    shared: str | os.PathLike | None = None,
) -> pa.Table:
    """Clusters and drop decisions for signature rows, as one table (see :func:`resolve_parts`).

    ``signatures``: a pyarrow Dataset, a list of parquet paths, a folder of
    parquet files, or a Table of rows carrying ``id``, ``modality`` and the
    ``sig_*`` columns (plus ``text``/``turns`` when text verification is on).
    ``against``/``decontaminate`` default to the config's lists. ``map_fn(fn,
    items)`` may run the per-partition work in parallel (e.g. Ray tasks); the
    result is the same either way. ``shared`` is where the files those tasks
    read and write live when they may run on other machines: a URI on the job's
    object store (``s3://b/run/.staging/dedup``; see
    :mod:`curation.dedup.shared`). It is used only with a ``map_fn``; by default
    (and in-process) they stay in ``workdir``.

    Returns ``id, dup_cluster, reason, detail`` for every row that is in a
    cluster (its representative included, with a null reason) or is
    contaminated, sorted by id; rows not listed are singletons.
    """
    with _workdir(workdir) as work:
        parts = resolve_parts(signatures, work, config=config, against=against, decontaminate=decontaminate,
                              map_fn=map_fn, shared=shared)
        tables = [pq.read_table(p) for p in parts.values()]
    if not tables:
        return RESULT_SCHEMA.empty_table()
    out = pa.concat_tables(tables)
    return out.take(pc.sort_indices(out, sort_keys=[("id", "ascending")]))


def resolve_parts(signatures: Any, workdir: str | os.PathLike, **options: Any) -> dict[int, Path]:
    """The answer of :func:`resolve_duplicates` written per input file: {file index: parquet part}.

    ``options``: the other keywords of :func:`resolve_duplicates`. Files are indexed in the order resolve
    reads them (:func:`~curation.dedup.inputs.input_files`: a list of paths sorted). A file's part holds the
    answer's rows of that file alone (sorted by id); files with none have no part. What a large job's driver
    holds is then the integer state of the rows in clusters, never the answer's strings, and each chunk reads
    only its own part. The parts live in ``workdir/result`` (resumable: a rerun with the same inputs returns
    them without recomputing).
    """
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    return _resolve(signatures, work, **options)


@contextmanager
def _workdir(workdir: str | os.PathLike | None) -> Iterator[Path]:
    if workdir is not None:
        yield Path(workdir)
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smolcurate-dedup-") as tmp:
        yield Path(tmp)


def _resolve(signatures: Any, work: Path, config: DedupConfig | Mapping[str, Any] | None = None, against: Sequence | None = None,
             decontaminate: Sequence | None = None, map_fn: MapFn | None = None, shared: str | os.PathLike | None = None
             ) -> dict[int, Path]:
    cfg = config if isinstance(config, DedupConfig) else DedupConfig.model_validate(dict(config or {}))
    against = [str(a) for a in (cfg.against if against is None else against)]
    evals = cfg.eval_sets if decontaminate is None else \
        DedupConfig.model_validate({"decontaminate": list(decontaminate)}).eval_sets
    area = SharedArea(shared if shared is not None and map_fn is not None else work)
    map_fn = map_fn or _serial_map
    files = input_files(signatures)
    fp = fingerprint(files, cfg, against, evals)
    if _done(work, "result", fp):
        return {int(p.stem.split("-")[1]): p for p in sorted((work / "result").glob("part-*.parquet"))}
    if not _done(work, "inputs", fp):
        for sub in ("sources", "buckets", "nodes", "edges", "join", "result"):
            shutil.rmtree(work / sub, ignore_errors=True)
        for marker in work.glob("*.done"):
            marker.unlink()
        if area.remote:
            for sub in SHARED_SUBDIRS:
                area.clear(sub)
        for k, path in enumerate(against):
            write_source(iter_source(path, cfg, field=f"dedup.against[{k}]"), work / "sources" / f"against-{k:03d}")
        for k, ev in enumerate(evals):
            write_source(iter_source(ev.path, cfg, field=f"decontaminate[{k}]", evalset=ev), work / "sources" / f"eval-{k:03d}")
        _mark(work, "inputs", fp)
    for k in range(len(against)):
        for p in sorted((work / "sources" / f"against-{k:03d}").glob("*.parquet")):
            files.append(SigFile(str(p), None, ROLE_AGAINST, k, 0, pq.ParquetFile(p).metadata.num_rows))
    for k in range(len(evals)):
        for p in sorted((work / "sources" / f"eval-{k:03d}").glob("*.parquet")):
            files.append(SigFile(str(p), None, ROLE_EVAL, k, 0, pq.ParquetFile(p).metadata.num_rows))
    offset = 0
    for f in files:
        f.offset = offset
        offset += f.rows

    with_eval = bool(evals)
    read_cols = list(CARRY)
    builder = RecordBuilder(cfg, with_eval)
    per_row = records_per_row(files, builder, read_cols)
    nparts = cfg.partitions or auto_partitions(files, per_row)
    # rows per scatter batch: about one Scatter buffer of records (six crop windows x 28 keys is ~200 per image)
    batch_rows = int(min(8192, max(256, Scatter.BUFFER_RECORDS // max(per_row, 1.0))))
    # phase 1: scatter
    if not (_done(work, "scatter", fp) and (not area.remote or area.done("buckets/scatter", fp))):
        shutil.rmtree(work / "buckets", ignore_errors=True)
        shutil.rmtree(work / "nodes", ignore_errors=True)
        (work / "nodes").mkdir(parents=True)
        scatter = Scatter(work / "buckets", nparts)
        for fi, f in enumerate(files):
            start = f.offset
            node_parts = []
            cols = read_cols if f.role == ROLE_EVAL else [c for c in read_cols if c not in ("text", "turns")]
            for batch in f.batches(cols, batch_size=batch_rows):
                if "id" not in batch.column_names:
                    raise UserError("signature rows need an `id` column", field="dedup")
                nodes = np.arange(start, start + batch.num_rows, dtype=np.int64)
                start += batch.num_rows
                for rec in builder.records(batch, nodes, f.role):
                    scatter.add(rec)
                node_parts.append(node_table(batch, nodes, f.role, f.set_index))
            if node_parts:
                pq.write_table(pa.concat_tables(node_parts), work / "nodes" / f"f-{fi:06d}.parquet")
        scatter.close()
        release_unused()  # the scatter's buffers: each phase starts from what the job holds, not the last peak
        for p in range(nparts):  # tasks read their partition from the shared area
            area.upload(work / "buckets" / partition_name(p), f"buckets/{partition_name(p)}")
        if area.remote:
            area.mark("buckets/scatter", fp)
        _mark(work, "scatter", fp)

    # phase 2: buckets, partition by partition (resumable per partition), in the shared area
    if not area.remote:
        (work / "edges").mkdir(exist_ok=True)

    def run_partition(p: int) -> int:
        edge_name, cand_name = f"edges/edges-{p:05d}.parquet", f"edges/cands-{p:05d}.parquet"
        if area.done(f"edges/p{p:05d}", fp) and (area.remote or (area.exists(edge_name) and area.exists(cand_name))):
            return p
        with area.fetch(f"buckets/{partition_name(p)}") as part:
            e, c = _process_partition(part, cfg)
        area.write_table(edge_name, e)
        area.write_table(cand_name, c)
        area.mark(f"edges/p{p:05d}", fp)  # after its files: a marker means they are complete
        return p

    parts = list(range(nparts))
    list(map_fn(run_partition, parts))

    # the verified edges go to disk by the node block of their first row as they come (phase 4 reads a block at a
    # time); the few between new and eval rows stay in memory
    edges = Blocks(work / "clusters" / "edges", block_starts([(f.offset, f.rows) for f in files]), EDGE_SCHEMA)
    contam: list[pa.Table] = []

    def add_edges(t: pa.Table) -> None:
        c = t.column("contam").to_numpy(zero_copy_only=False)
        contam.append(t.filter(pa.array(c)))
        t = t.filter(pa.array(~c))
        a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
        lo = np.minimum(a, b)
        t = t.set_column(0, "a", pa.array(lo)).set_column(1, "b", pa.array(np.maximum(a, b)))
        edges.add(t, lo)

    cands = Blocks(work / "clusters" / "cands", edges.starts, EDGE_SCHEMA)
    for p in parts:
        add_edges(area.read_table(f"edges/edges-{p:05d}.parquet"))
        c = area.read_table(f"edges/cands-{p:05d}.parquet")  # a < b, as the bucket phase writes them
        cands.add(c, c.column("a").to_numpy())
    batches = cands.runs(CANDIDATE_ROWS)
    release_unused()
    # phase 3: each method's own step (verification of its candidates, or its own edge search), its candidates
    # given a run of node blocks at a time (a pair is in the block of its first row, so each is verified once)
    for method in methods():
        phase = method.resolve
        if phase is None or not phase.active(cfg):
            continue
        out = work / phase.output
        if _done(work, phase.marker, fp) and out.is_file():
            pf = pq.ParquetFile(out)
            for g in range(pf.num_row_groups):
                add_edges(pf.read_row_group(g).cast(EDGE_SCHEMA))
            continue
        kinds = pa.array(phase.candidate_kinds, pa.int8())
        with pq.ParquetWriter(out, EDGE_SCHEMA) as writer:
            for b, run in enumerate(batches if phase.candidate_kinds else [[]]):
                mine = dedupe_by_kind(pa.concat_tables([EDGE_SCHEMA.empty_table()] + [cands.read(k) for k in run]))
                mine = mine.filter(pc.is_in(mine.column("kind"), kinds))
                found = phase.run(ResolveContext(mine, files, cfg, work, map_fn, area, batch=b))
                del mine
                for t in [found] if isinstance(found, pa.Table) else found:
                    t = t.cast(EDGE_SCHEMA)
                    writer.write_table(t)
                    add_edges(t)
                del found
                release_unused()  # one candidate run's join and sorts
        _mark(work, phase.marker, fp)
    cands.drop()
    shutil.rmtree(work / "result", ignore_errors=True)
    contam_edges = dedupe_edges(pa.concat_tables(contam)) if contam else EDGE_SCHEMA.empty_table()
    parts = _clusters(edges, contam_edges, work, evals, files, work / "result")
    release_unused()
    shutil.rmtree(work / "clusters", ignore_errors=True)
    _mark(work, "result", fp)
    return parts


def records_per_row(files: list[SigFile], builder: RecordBuilder, columns: list[str]) -> float:
    """Bucket records per input row, measured on the first batch of up to SAMPLE_FILES files (evenly spread)."""
    step = max(1, len(files) // SAMPLE_FILES)
    rows = records = 0
    for f in files[::step][:SAMPLE_FILES]:
        cols = columns if f.role == ROLE_EVAL else [c for c in columns if c not in ("text", "turns")]
        for batch in f.batches(cols, batch_size=1024):
            if "id" not in batch.column_names:
                break
            nodes = np.zeros(batch.num_rows, dtype=np.int64)
            records += sum(len(r["key"]) for r in builder.records(batch, nodes, f.role))
            rows += batch.num_rows
            break
    return records / rows if rows else 0.0


def auto_partitions(files: list[SigFile], per_row: float) -> int:
    """Partitions for about PARTITION_RECORDS bucket records each, so a task's memory does not grow with the corpus.

    Deterministic for given inputs (the choice only moves memory and speed, never the result).
    """
    estimate = per_row * sum(f.rows for f in files)
    return int(min(4096, max(MIN_PARTITIONS, -(-estimate // PARTITION_RECORDS))))
