"""Phase 3 of resolve: MinHash candidates checked by exact Jaccard with an external join by input file."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig
from curation.dedup.inputs import SigFile
from curation.dedup.layout import EDGE_SCHEMA, MapFn
from curation.dedup.minhash import estimated_jaccard, jaccard_pairs, shingle_sets
from curation.dedup.records import column_values
from curation.dedup.signatures import row_text


def _list_array(arrays: list[np.ndarray]) -> pa.Array:
    """large_list<uint64> from numpy arrays in one concatenate (``pa.array`` would convert them value by value)."""
    sizes = np.fromiter((x.size for x in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    values = np.concatenate(arrays).astype(np.uint64, copy=False) if arrays else np.zeros(0, np.uint64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def _split_lists(col: pa.ChunkedArray) -> list[np.ndarray]:
    """The rows of a list<uint64> column as numpy arrays, straight from its buffers."""
    lens = np.asarray(pc.list_value_length(col).to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(pc.list_flatten(col).to_numpy(zero_copy_only=False), dtype=np.uint64)
    return np.split(values, np.cumsum(lens)[:-1]) if lens.size else []


def verify_text(cands: pa.Table, files: list[SigFile], cfg: DedupConfig, workdir: Path, map_fn: MapFn) -> pa.Table:
    """Keep MinHash candidates whose exact Jaccard (or signature estimate) reaches the threshold."""
    if cands.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    tcfg = cfg.text
    offsets = np.array([f.offset for f in files], dtype=np.int64)
    a = cands.column("a").to_numpy()
    b = cands.column("b").to_numpy()
    fa = np.searchsorted(offsets, a, side="right") - 1
    fb = np.searchsorted(offsets, b, side="right") - 1
    join = workdir / "join"
    if join.exists():
        shutil.rmtree(join)
    join.mkdir(parents=True)
    eidx = np.arange(a.size)

    def payload(f: SigFile, local: np.ndarray) -> list[np.ndarray]:
        if tcfg.verify:
            t = f.take(local, ["text", "turns"])
            texts = [row_text(x, y) for x, y in zip(column_values(t, "text"), column_values(t, "turns"))]
            return shingle_sets(texts, ngram=tcfg.ngram, unit=tcfg.unit, seed=tcfg.seed)
        t = f.take(local, ["sig_minhash"])
        mat = np.asarray(t.column("sig_minhash").combine_chunks().flatten().to_numpy(), dtype=np.uint64)
        return list(mat.reshape(len(local), -1))

    # pass 1: payload of `a`, written next to the file of `b`
    for fi in np.unique(fa):
        sel = np.flatnonzero(fa == fi)
        uniq, inv = np.unique(a[sel] - offsets[fi], return_inverse=True)
        pay = payload(files[fi], uniq)
        out = pa.table(
            {
                "e": eidx[sel],
                "fb": fb[sel],
                "pa": _list_array([pay[i] for i in inv]),
            }
        )
        for gb in np.unique(fb[sel]):
            part = out.filter(pc.equal(out.column("fb"), int(gb)))
            pq.write_table(part, join / f"to-{gb:06d}-from-{fi:06d}.parquet")
    # pass 2: per file of `b`, compare
    sims = np.zeros(a.size, dtype=np.float64)
    for gb in np.unique(fb):
        parts = sorted(join.glob(f"to-{gb:06d}-from-*.parquet"))
        t = pa.concat_tables([pq.read_table(p) for p in parts])
        e = t.column("e").to_numpy()
        uniq, inv = np.unique(b[e] - offsets[gb], return_inverse=True)
        pay_b = payload(files[gb], uniq)
        pay_a = _split_lists(t.column("pa"))
        if tcfg.verify:
            sims[e] = jaccard_pairs(pay_a, [pay_b[i] for i in inv])
        else:
            sims[e] = estimated_jaccard(np.stack(pay_a), np.stack([pay_b[i] for i in inv]))
    shutil.rmtree(join, ignore_errors=True)
    ok = sims >= tcfg.threshold
    res = cands.filter(pa.array(ok))
    return res.set_column(res.schema.get_field_index("dist"), "dist", pa.array((1.0 - sims[ok]).astype(np.float32)))
