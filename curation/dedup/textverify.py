"""Phase 3 of resolve: MinHash candidates checked by exact Jaccard with an external join by input file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.dedup.config import DedupConfig
from curation.dedup.inputs import SigFile
from curation.dedup.layout import EDGE_SCHEMA, MapFn
from curation.dedup.minhash import estimated_jaccard, jaccard_pairs, shingle_sets
from curation.dedup.pairjoin import join_compare
from curation.dedup.records import column_values
from curation.dedup.signatures import row_text


def verify_text(cands: pa.Table, files: list[SigFile], cfg: DedupConfig, workdir: Path, map_fn: MapFn) -> pa.Table:
    """Keep MinHash candidates whose exact Jaccard (or signature estimate) reaches the threshold."""
    if cands.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    tcfg = cfg.text

    def payload(f: SigFile, local: np.ndarray) -> list[bytes]:
        if tcfg.verify:
            t = f.take(local, ["text", "turns"])
            texts = [row_text(x, y) for x, y in zip(column_values(t, "text"), column_values(t, "turns"))]
            return [s.astype(np.uint64, copy=False).tobytes() for s in shingle_sets(texts, ngram=tcfg.ngram, unit=tcfg.unit, seed=tcfg.seed)]
        t = f.take(local, ["sig_minhash"])
        mat = np.asarray(t.column("sig_minhash").combine_chunks().flatten().to_numpy(), dtype=np.uint64)
        return [row.tobytes() for row in mat.reshape(len(local), -1)]

    def compare(pa_: list[bytes], pb: list[bytes]) -> np.ndarray:
        xa = [np.frombuffer(x, dtype=np.uint64) for x in pa_]
        xb = [np.frombuffer(x, dtype=np.uint64) for x in pb]
        if tcfg.verify:
            return jaccard_pairs(xa, xb)
        return estimated_jaccard(np.stack(xa), np.stack(xb))

    a = cands.column("a").to_numpy()
    b = cands.column("b").to_numpy()
    sims = join_compare(a, b, files, workdir / "join", payload, compare)
    ok = sims >= tcfg.threshold
    res = cands.filter(pa.array(ok))
    return res.set_column(res.schema.get_field_index("dist"), "dist", pa.array((1.0 - sims[ok]).astype(np.float32)))
