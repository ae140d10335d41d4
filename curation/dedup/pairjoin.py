"""An external join of candidate pairs with per-row payloads, one input file in memory at a time.

Candidate pairs ``(a, b)`` name rows by global node number; their payloads
(n-gram sets for text, verification thumbnails for images) live in the input
files. Pass 1 reads, file by file, the payload of every ``a`` and writes it
next to the file of its ``b``; pass 2 reads, file by file, the payloads of the
``b`` rows, meets the ``a`` payloads written for that file, and compares. So
only one input file's payloads and the pairs that touch it are in memory.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.inputs import SigFile

#: payload(file, local row positions) -> one bytes object per position
Payload = Callable[[SigFile, np.ndarray], list[bytes]]
#: compare(payloads of a, payloads of b) -> one score per pair
Compare = Callable[[list[bytes], list[bytes]], np.ndarray]


def join_compare(a: np.ndarray, b: np.ndarray, files: list[SigFile], workdir: Path, payload: Payload,
                 compare: Compare) -> np.ndarray:
    """``compare`` of every pair's two payloads (``float64[len(a)]``), through files under ``workdir``."""
    scores = np.zeros(a.size, dtype=np.float64)
    if a.size == 0:
        return scores
    offsets = np.array([f.offset for f in files], dtype=np.int64)
    fa = np.searchsorted(offsets, a, side="right") - 1
    fb = np.searchsorted(offsets, b, side="right") - 1
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    eidx = np.arange(a.size)
    # pass 1: payload of `a`, written next to the file of `b`
    for fi in np.unique(fa):
        sel = np.flatnonzero(fa == fi)
        uniq, inv = np.unique(a[sel] - offsets[fi], return_inverse=True)
        pay = payload(files[fi], uniq)
        out = pa.table({"e": eidx[sel], "fb": fb[sel], "pa": pa.array([pay[i] for i in inv], pa.large_binary())})
        for gb in np.unique(fb[sel]):
            part = out.filter(pc.equal(out.column("fb"), int(gb)))
            pq.write_table(part, workdir / f"to-{gb:06d}-from-{fi:06d}.parquet")
    # pass 2: per file of `b`, compare
    for gb in np.unique(fb):
        t = pa.concat_tables([pq.read_table(p) for p in sorted(workdir.glob(f"to-{gb:06d}-from-*.parquet"))])
        e = t.column("e").to_numpy()
        uniq, inv = np.unique(b[e] - offsets[gb], return_inverse=True)
        pay_b = payload(files[gb], uniq)
        scores[e] = compare(t.column("pa").to_pylist(), [pay_b[i] for i in inv])
    shutil.rmtree(workdir, ignore_errors=True)
    return scores
