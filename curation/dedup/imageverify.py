"""Phase 3b of resolve: image candidates (pHash within the distance) confirmed on their verification thumbnails.

Only pairs that the pHash buckets proposed and that passed the Hamming and
colour checks reach this phase, so its cost grows with the candidates, never
with all pairs. Each row's payload is its pHashes and its ``sig_vthumb``
thumbnails, fetched with the same external join as text verification
(:mod:`curation.dedup.pairjoin`). The rule is :func:`curation.dedup.verify.compare`.

- dedup pairs (``phash``): the rows' images are aligned item by item; every
  item must verify;
- contamination pairs (``phash`` against an evaluation row): any item of the
  training row within ``max_distance`` of an evaluation image that verifies;
- a row without verification thumbnails (signatures from an older version)
  is decided by its pHash alone, as before.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.dedup import verify as V
from curation.dedup.config import DedupConfig
from curation.dedup.inputs import SigFile
from curation.dedup.layout import EDGE_SCHEMA, K_PHASH_ITEM
from curation.dedup.pairjoin import join_compare

_SIDE2 = V.VERIFY_SIDE * V.VERIFY_SIDE


def _payload(f: SigFile, local: np.ndarray) -> list[bytes]:
    """Per row: item count, the pHashes, then the thumbnails (count 0 when the row has no thumbnails)."""
    t = f.take(local, ["sig_phash", "sig_vthumb"])
    ph = t.column("sig_phash").to_pylist() if "sig_phash" in t.column_names else [None] * len(local)
    th = t.column("sig_vthumb").to_pylist() if "sig_vthumb" in t.column_names else [None] * len(local)
    out = []
    for hashes, thumbs in zip(ph, th):
        hashes = hashes or []
        if not thumbs or len(thumbs) != len(hashes) or any(len(x) != _SIDE2 for x in thumbs):
            out.append(struct.pack("<H", 0))
            continue
        out.append(struct.pack("<H", len(hashes)) + np.asarray(hashes, dtype=np.uint64).tobytes() + b"".join(thumbs))
    return out


def _unpack(blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    (n,) = struct.unpack_from("<H", blob)
    hashes = np.frombuffer(blob, dtype=np.uint64, count=n, offset=2)
    thumbs = np.frombuffer(blob, dtype=np.uint8, count=n * _SIDE2, offset=2 + 8 * n).reshape(n, V.VERIFY_SIDE, V.VERIFY_SIDE)
    return hashes, thumbs


class _Checker:
    """``compare`` callback of the join: expands pairs to item pairs, verifies them in one pass, reduces per pair."""

    def __init__(self, any_item: bool, max_distance: int) -> None:
        self.any_item, self.max_distance = any_item, max_distance
        self.items = 0

    def __call__(self, pay_a: list[bytes], pay_b: list[bytes]) -> np.ndarray:
        left, right, owner = [], [], []
        unverifiable = np.zeros(len(pay_a), dtype=bool)
        for k, (x, y) in enumerate(zip(pay_a, pay_b)):
            ha, ta = _unpack(x)
            hb, tb = _unpack(y)
            if ha.size == 0 or hb.size == 0:
                unverifiable[k] = True
                continue
            if self.any_item:
                d = np.bitwise_count(ha[:, None] ^ hb[None, :])
                i, j = np.nonzero(d <= self.max_distance)
                if i.size == 0:  # matched through a band of another item: check the closest pair
                    i, j = np.unravel_index(np.argmin(d), d.shape)
                    i, j = np.atleast_1d(i), np.atleast_1d(j)
            else:
                n = min(ha.size, hb.size)
                i = j = np.arange(n)
            left.append(ta[i])
            right.append(tb[j])
            owner.append(np.full(i.size, k))
        accepted = unverifiable.astype(np.float64)
        if left:
            own = np.concatenate(owner)
            ok = V.compare(np.concatenate(left), np.concatenate(right))["accepted"]
            self.items += own.size
            if self.any_item:
                res = np.zeros(len(pay_a), dtype=bool)
                np.logical_or.at(res, own, ok)
            else:
                res = np.ones(len(pay_a), dtype=bool)
                np.logical_and.at(res, own, ok)
                res &= np.isin(np.arange(len(pay_a)), own)
            accepted = np.where(unverifiable, 1.0, res.astype(np.float64))
        return accepted


def verify_images(cands: pa.Table, files: list[SigFile], cfg: DedupConfig, workdir: Path, batch: int = 0) -> pa.Table:
    """The image candidates whose thumbnails verify; cost figures go to ``workdir/image-verify.json``
    (summed over the batches of one resolve: ``batch`` 0 starts them)."""
    if cands.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    start = time.perf_counter()
    parts, items = [], 0
    for any_item in (False, True):
        sel = pc.equal(cands.column("kind"), K_PHASH_ITEM)
        part = cands.filter(sel if any_item else pc.invert(sel))
        if part.num_rows == 0:
            continue
        check = _Checker(any_item, cfg.image.max_distance)
        ok = join_compare(part.column("a").to_numpy(), part.column("b").to_numpy(), files, workdir / "join-img",
                          _payload, check) > 0.5
        items += check.items
        parts.append(part.filter(pa.array(ok)))
    seconds = time.perf_counter() - start
    kept = pa.concat_tables(parts) if parts else EDGE_SCHEMA.empty_table()
    path = workdir / "image-verify.json"
    stats = {"candidates": cands.num_rows, "item_pairs": items, "verified": kept.num_rows, "seconds": seconds}
    if batch > 0 and path.is_file():
        before = json.loads(path.read_text())
        stats = {k: v + before.get(k, 0) for k, v in stats.items()}
    stats["seconds"] = round(stats["seconds"], 4)
    stats["ms_per_candidate"] = round(1000 * stats["seconds"] / stats["candidates"], 4)
    path.write_text(json.dumps(stats))
    return kept
