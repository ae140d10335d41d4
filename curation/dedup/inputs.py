"""Inputs of the resolve stage: signature files (or an in-memory table) and their global node ranges."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig, EvalSetConfig
from curation.dedup.external import CARRY
from curation.dedup.layout import RESOLVE_VERSION, ROLE_NEW


@dataclass
class SigFile:
    """One input file (or in-memory table) of signature rows and its global node range."""

    path: str | None
    table: pa.Table | None
    role: int
    set_index: int
    offset: int
    rows: int

    def batches(self, columns: Sequence[str], batch_size: int = 8192) -> Iterator[pa.Table]:
        if self.table is not None:
            cols = [c for c in columns if c in self.table.column_names]
            for b in self.table.select(cols).to_batches(max_chunksize=batch_size):
                yield pa.Table.from_batches([b])
            return
        pf = pq.ParquetFile(self.path)
        cols = [c for c in columns if c in pf.schema_arrow.names]
        for b in pf.iter_batches(batch_size=batch_size, columns=cols):
            yield pa.Table.from_batches([b])

    def take(self, local: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows at local positions, in the given order."""
        if self.table is not None:
            t = self.table
        else:
            pf = pq.ParquetFile(self.path)
            t = pf.read(columns=[c for c in columns if c in pf.schema_arrow.names])
        cols = [c for c in columns if c in t.column_names]
        return t.select(cols).take(pa.array(local, pa.int64()))


def input_files(signatures: Any) -> list[SigFile]:
    if isinstance(signatures, pa.Table):
        return [SigFile(None, signatures, ROLE_NEW, 0, 0, signatures.num_rows)]
    if isinstance(signatures, pads.FileSystemDataset):
        paths = sorted(signatures.files)
    elif isinstance(signatures, pads.Dataset):
        table = signatures.to_table(columns=[c for c in CARRY if c in signatures.schema.names])
        return [SigFile(None, table, ROLE_NEW, 0, 0, table.num_rows)]
    elif isinstance(signatures, (str, os.PathLike)):
        p = Path(signatures)
        paths = sorted(str(x) for x in p.rglob("*.parquet")) if p.is_dir() else [str(p)]
    else:
        paths = sorted(str(p) for p in signatures)
    files = []
    for path in paths:
        rows = pq.ParquetFile(path).metadata.num_rows
        files.append(SigFile(path, None, ROLE_NEW, 0, 0, rows))
    return files


def fingerprint(files: list[SigFile], config: DedupConfig, against: list[str], evals: list[EvalSetConfig]) -> str:
    h = hashlib.sha256()
    h.update(f"resolve-v{RESOLVE_VERSION}".encode())
    h.update(config.model_dump_json().encode())
    h.update(json.dumps([str(a) for a in against]).encode())
    h.update(json.dumps([e.model_dump() for e in evals], sort_keys=True).encode())
    for f in files:
        if f.path:
            st = os.stat(f.path)
            h.update(f"{f.path}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            assert f.table is not None
            h.update(json.dumps(f.table.column_names).encode())
            for chunk in f.table.column("id").chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(buf)
    return h.hexdigest()[:24]
