"""Semantic dedup (SemDeDup, Abbas et al. 2023): near-duplicates by cosine similarity of image embeddings.

The method:

1. **Sample and cluster.** Spherical k-means on the L2-normalised embeddings
   (``emb_image``, written once by ``enrich.embed``: no second forward pass).
   When there are more than ``sample`` rows, k-means runs on a sample: the
   rows with the smallest hashes of their id (the same sample however the
   input is split, in memory ``sample x dim`` floats). The number of clusters
   is ``clusters``, or one per ``cluster_rows`` rows.
2. **Assign.** Every row goes to its nearest centroid, streamed batch by batch
   into one parquet file per cluster partition under the work directory.
3. **Pairs.** Within each cluster, all pairs with cosine similarity at least
   ``1 - eps`` are edges (blocked matrix products: a block of rows against the
   cluster at a time). Partitions run through ``map_fn`` (Ray tasks on the Ray
   engine).

This module is the whole method (registered in
:mod:`curation.dedup.methods.registry`): its config, its resolve phase
(``semantic``, run only when enabled) and its edge kind. The edges join the
other methods' edges, so clusters, ``dup_cluster``, the
ledger reason ``duplicate`` and the detail (``match: semantic``, with the
cosine) come out as for every method. **Keep rule:** the shared rank of
:mod:`curation.dedup.clusters`: an ``against`` row wins, then the largest
image area, then the most bytes, the longest text and the smallest id;
SemDeDup's own rule (keep the row farthest from the centroid) is not used so
that a cluster found by several methods has one representative.

Only new rows are compared (not ``against`` manifests or evaluation sets), and
only rows with an embedding. With one cluster (small data) every pair is
compared exactly; with several, a pair split by the clustering is missed, as
in SemDeDup.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from curation.dedup.methods.base import DedupMethod, EdgeKind, ResolveContext, ResolvePhase

#: edge kind of a semantic match in the resolve stage's edge tables (numbers below 8: curation.dedup.layout)
K_SEMANTIC = 8


class SemanticConfig(BaseModel):
    """``dedup.semantic``: SemDeDup over the image embeddings of ``enrich.embed``."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    #: the embedding column (list<float16>, as enrich.embed writes it)
    column: str = "emb_image"
    #: pairs with cosine similarity >= 1 - eps are duplicates
    eps: float = Field(0.05, gt=0, lt=1)
    #: k-means clusters; null: one per cluster_rows rows
    clusters: Optional[int] = Field(None, ge=1, le=1_000_000)
    cluster_rows: int = Field(20_000, ge=100)
    #: k-means runs on at most this many rows (by smallest id hash)
    sample: int = Field(100_000, ge=100)
    iterations: int = Field(25, ge=1, le=1000)
    seed: int = Field(0, ge=0)
    #: rows of one block of the within-cluster similarity products
    block: int = Field(2048, ge=16)
    #: cluster partition files (memory of the pair phase ~ one partition)
    partitions: int = Field(16, ge=1, le=4096)


def _id_hash(ids: pa.Array, seed: int) -> np.ndarray:
    import polars as pl

    return pl.Series(ids.cast(pa.string())).hash(seed=seed).to_numpy().astype(np.uint64)


def _emb(t: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    from curation.enrich.clip import embeddings

    return embeddings(t, column)


def spherical_kmeans(x: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Unit-norm centroids [k, d] (float64): k-means++ seeding, then Lloyd steps on cosine similarity."""
    n = len(x)
    k = min(k, n)
    rng = np.random.default_rng(seed)
    x = x.astype(np.float64)
    centers = [int(rng.integers(n))]
    dist = 1.0 - x @ x[centers[0]]
    for _ in range(1, k):
        p = np.clip(dist, 0, None)
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        centers.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    c = x[centers].copy()
    for _ in range(iterations):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.zeros_like(c)
        np.add.at(new, assign, x)
        norms = np.linalg.norm(new, axis=1, keepdims=True)
        empty = norms[:, 0] == 0
        new[~empty] /= norms[~empty]
        new[empty] = c[empty]
        if np.array_equal(new, c):
            break
        c = new
    return c


def cluster_pairs(nodes: np.ndarray, x: np.ndarray, threshold: float, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, cosine) for every pair a < b of one cluster with cosine >= threshold (blocked products)."""
    order = np.argsort(nodes, kind="stable")
    nodes, x = nodes[order], x[order].astype(np.float64)
    out_a, out_b, out_s = [], [], []
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ x[s:].T  # this block against itself and everything after it
        i, j = np.nonzero(sims >= threshold)
        keep = j > i  # upper triangle: each pair once, no self pairs
        i, j = i[keep], j[keep]
        out_a.append(nodes[s + i])
        out_b.append(nodes[s + j])
        out_s.append(sims[i, j])
    if not out_a:
        return np.array([], np.int64), np.array([], np.int64), np.array([], np.float64)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_s)


def semantic_edges(files: Sequence[Any], cfg: SemanticConfig, work: Path,
                   map_fn: Callable[[Callable[[int], Any], Sequence[int]], Any], new_role: int = 0,
                   shared: Any = None) -> pa.Table:
    """Edges (a, b, kind, dist = 1 - cosine, contam) between near-duplicate rows of the new files.

    ``files`` are the resolve stage's SigFiles (``offset`` = first node number,
    ``role``, ``batches(columns)``); edges use the same node numbers. The
    cluster partitions that ``map_fn`` tasks read, and their edges, go to
    ``shared`` (a :class:`~curation.dedup.shared.SharedArea`; default ``work``).
    """
    from curation.dedup.layout import EDGE_SCHEMA
    from curation.dedup.records import Scatter, partition_name, read_partition
    from curation.dedup.shared import SharedArea

    area = shared if shared is not None else SharedArea(work)
    root = work / "semantic"
    root.mkdir(parents=True, exist_ok=True)
    new = [f for f in files if f.role == new_role]
    # pass 1: count rows with an embedding and keep the bottom-`sample` rows by id hash (bounded memory)
    n = 0
    samp_h = np.array([], np.uint64)
    samp_x: np.ndarray | None = None
    for f in new:
        for batch in f.batches(["id", cfg.column]):
            if cfg.column not in batch.column_names:
                continue
            x, valid = _emb(batch, cfg.column)
            if not valid.any():
                continue
            h = _id_hash(batch.column("id").filter(pa.array(valid)), cfg.seed)
            x = x[valid]
            n += len(x)
            samp_h = np.concatenate([samp_h, h])
            samp_x = x if samp_x is None else np.concatenate([samp_x, x])
            if len(samp_h) > cfg.sample:
                keep = np.argsort(samp_h, kind="stable")[: cfg.sample]
                samp_h, samp_x = samp_h[keep], samp_x[keep]
    if n < 2 or samp_x is None:
        return EDGE_SCHEMA.empty_table()
    order = np.argsort(samp_h, kind="stable")  # the sample in hash order: independent of input order
    k = cfg.clusters or max(1, math.ceil(n / cfg.cluster_rows))
    centroids = spherical_kmeans(samp_x[order], k, cfg.iterations, cfg.seed) if k > 1 else np.ones((1, samp_x.shape[1]))
    k = len(centroids)
    parts = min(cfg.partitions, k)
    # pass 2: assign every row to its nearest centroid, scatter by cluster into partition files
    schema = pa.schema([("node", pa.int64()), ("cluster", pa.int32()), ("emb", pa.list_(pa.float32()))])
    scatter = Scatter(root, parts, schema)
    try:
        for f in new:
            start = f.offset
            for batch in f.batches(["id", cfg.column]):
                rows = batch.num_rows
                if cfg.column not in batch.column_names:
                    start += rows
                    continue
                x, valid = _emb(batch, cfg.column)
                nodes = np.arange(start, start + rows, dtype=np.int64)[valid]
                start += rows
                x = x[valid]
                if not len(x):
                    continue
                cl = np.argmax(x.astype(np.float64) @ centroids.T, axis=1).astype(np.int32) if k > 1 else np.zeros(len(x), np.int32)
                d = x.shape[1]
                emb = pa.ListArray.from_arrays(pa.array(np.arange(0, (len(x) + 1) * d, d, dtype=np.int32)),
                                               pa.array(x.reshape(-1), pa.float32()))
                scatter.add_table(pa.table({"node": nodes, "cluster": cl, "emb": emb}, schema=schema),
                                  (cl % parts).astype(np.int64))
    finally:
        scatter.close()
    present = [p for p in range(parts) if scatter.rows[p]]
    for p in present:  # tasks read their partition from the shared area
        area.upload(root / partition_name(p), f"semantic/{partition_name(p)}")
    threshold = 1.0 - cfg.eps

    # pass 3: pairs within each cluster, one partition per task
    def run_partition(p: int) -> str:
        out = f"semantic/edges-{p:05d}.parquet"
        if p not in present:
            area.write_table(out, EDGE_SCHEMA.empty_table())
            return out
        with area.fetch(f"semantic/{partition_name(p)}") as path:
            t = read_partition(path)
        nodes = t.column("node").to_numpy()
        cl = t.column("cluster").to_numpy()
        d = len(t.column("emb")[0]) if t.num_rows else 0
        x = np.asarray(pc.list_flatten(t.column("emb")).to_numpy(), np.float32).reshape(-1, d) if d else np.zeros((0, 0))
        a_all, b_all, s_all = [], [], []
        for c in np.unique(cl):
            m = cl == c
            a, b, s = cluster_pairs(nodes[m], x[m], threshold, cfg.block)
            a_all.append(a)
            b_all.append(b)
            s_all.append(s)
        a = np.concatenate(a_all) if a_all else np.array([], np.int64)
        b = np.concatenate(b_all) if b_all else np.array([], np.int64)
        s = np.concatenate(s_all) if s_all else np.array([], np.float64)
        edges = pa.table({"a": a.astype(np.int64), "b": b.astype(np.int64), "kind": np.full(len(a), K_SEMANTIC, np.int8),
                          "dist": np.clip(1.0 - s, 0, None).astype(np.float32), "contam": np.zeros(len(a), bool)},
                         schema=EDGE_SCHEMA)
        area.write_table(out, edges)
        return out

    outs = list(map_fn(run_partition, list(range(parts))))
    return (area.read_table(o) for o in outs)  # one partition's edges at a time


def _resolve(ctx: ResolveContext) -> pa.Table:
    from curation.dedup.layout import ROLE_NEW

    return semantic_edges(ctx.files, ctx.config.semantic, ctx.work, ctx.map_fn, ROLE_NEW, ctx.shared)


METHOD = DedupMethod(
    key="semantic",
    config=SemanticConfig,
    kinds={K_SEMANTIC: EdgeKind("semantic", "cosine", "similarity")},
    resolve=ResolvePhase(marker="semantic", output="semantic-edges.parquet", run=_resolve,
                         active=lambda cfg: cfg.semantic.enabled),
    description="SemDeDup: k-means on image embeddings, cosine >= 1 - eps within a cluster",
)
