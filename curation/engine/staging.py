"""The staging area of a job inside its output folder: per-chunk results written atomically.

``DIR/.staging/`` holds ``job.json`` (what job this is: recipe hash, input
fingerprints, chunk count), and for every finished chunk ``kept-K.parquet``,
``dropped-K.parquet`` and last ``chunk-K.json``. A chunk counts as finished
only once its marker exists, so a job killed at any point redoes at most the
chunks that were in flight. The folder is removed after the manifest commits.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.errors import UserError
from manifests.fsutil import atomic_write, atomic_write_json

STAGING = ".staging"
JOB_VERSION = 1


class Staging:
    def __init__(self, out_dir: str | Path) -> None:
        self.root = Path(out_dir) / STAGING

    # -- job identity ---------------------------------------------------------
    def prepare(self, job: dict[str, Any], overwrite: bool) -> int:
        """Create or check ``job.json``; returns the number of chunks already finished."""
        job = {"version": JOB_VERSION, **job}
        jf = self.root / "job.json"
        if jf.is_file():
            try:
                old = json.loads(jf.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != job:
                if not overwrite:
                    what = "inputs changed" if old and old.get("recipe_hash") == job.get("recipe_hash") else "a different recipe"
                    raise UserError(
                        f"{self.root.parent} holds an unfinished job for {what}; pass --overwrite to discard it"
                    )
                self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        if not jf.is_file():
            atomic_write_json(jf, job)
        return len(self.finished())

    def clear(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)

    # -- chunks ---------------------------------------------------------------
    def marker(self, k: int) -> Path:
        return self.root / f"chunk-{k:06d}.json"

    def kept_path(self, k: int) -> Path:
        return self.root / f"kept-{k:06d}.parquet"

    def dropped_path(self, k: int) -> Path:
        return self.root / f"dropped-{k:06d}.parquet"

    def finished(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.root.glob("chunk-*.json")}

    def write_chunk(self, k: int, kept: pa.Table, dropped: pa.Table, counts: dict[str, Any]) -> None:
        atomic_write(self.kept_path(k), lambda p: pq.write_table(kept, p, compression="zstd"))
        atomic_write(self.dropped_path(k), lambda p: pq.write_table(dropped, p, compression="zstd"))
        atomic_write_json(self.marker(k), counts)

    def counts(self, k: int) -> dict[str, Any]:
        return json.loads(self.marker(k).read_text())

    def read_kept(self, k: int) -> pa.Table:
        return pq.read_table(self.kept_path(k))

    def read_dropped(self, k: int) -> pa.Table:
        return pq.read_table(self.dropped_path(k))

    def path(self, name: str) -> Path:
        return self.root / name
