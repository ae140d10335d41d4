"""The staging area of a job inside its output folder: per-chunk results written atomically.

``DIR/.staging/`` holds ``job.json`` (what job this is: recipe hash, input
fingerprints, chunk count), and for every finished chunk ``kept-K.parquet``,
``dropped-K.parquet`` and last ``chunk-K.json``. A chunk counts as finished
only once its marker exists, so a job killed at any point redoes at most the
chunks that were in flight. The folder is removed after the manifest commits.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import storage
from manifests.errors import UserError
from manifests.fsutil import atomic_write, atomic_write_json

STAGING = ".staging"
JOB_VERSION = 1


class Staging:
    """The staging area of the job whose output is ``out_dir`` (a folder, or a URI on an object store).

    On an object store the staging area is ``URI/.staging/``: each process (the
    driver, every Ray worker, on any node) writes a chunk to a private local
    scratch folder and uploads its files, the marker last; the store is the
    truth, so a job killed on one machine resumes on another. The driver's
    :meth:`pull` copies the finished chunks it does not hold yet into its scratch
    folder before the global stages read them.
    """

    def __init__(self, out_dir: str | Path, *, keep_local: bool = True) -> None:
        self.remote: str | None = None
        #: on a store, False drops the scratch copy of a chunk once uploaded (Ray workers: the driver pulls it)
        self.keep_local = keep_local
        if storage.is_uri(out_dir):
            self.out: str | Path = os.fspath(out_dir).rstrip("/")
            self.remote = storage.join(self.out, STAGING)
            self.root = Path(tempfile.mkdtemp(prefix="smolcurate-staging-"))
        else:
            self.out = Path(out_dir)
            self.root = self.out / STAGING

    def _uri(self, path: Path) -> str:
        assert self.remote is not None
        return storage.join(self.remote, *path.relative_to(self.root).parts)

    def publish(self, *paths: Path) -> None:
        """Upload staged files (in the order given: a marker goes last) when the staging area is on a store."""
        if self.remote is not None:
            for p in paths:
                storage.put_file(p, self._uri(p))

    # -- job identity ---------------------------------------------------------
    def prepare(self, job: dict[str, Any], overwrite: bool) -> int:
        """Create or check ``job.json``; returns the number of chunks already finished."""
        job = {"version": JOB_VERSION, **job}
        jf = self.root / "job.json"
        if self.remote is not None:
            old = storage.read_bytes(self._uri(jf))
            if old is not None:
                jf.parent.mkdir(parents=True, exist_ok=True)
                jf.write_bytes(old)
        if jf.is_file():
            try:
                old = json.loads(jf.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != job:
                if not overwrite:
                    what = "inputs changed" if old and old.get("recipe_hash") == job.get("recipe_hash") else "a different recipe"
                    raise UserError(
                        f"{self.out} holds an unfinished job for {what}; pass --overwrite to discard it"
                    )
                self.clear()
        self.root.mkdir(parents=True, exist_ok=True)
        if not jf.is_file():
            atomic_write_json(jf, job)
            self.publish(jf)
        return len(self.finished())

    def clear(self) -> None:
        if self.remote is not None:
            storage.remove(self.remote, recursive=True)
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
        names = {p.name for p in self.root.glob("chunk-*.json")}
        if self.remote is not None:
            names |= {n for n in storage.list_names(self.remote) if n.startswith("chunk-") and n.endswith(".json")}
        return {int(n[:-len(".json")].split("-")[1]) for n in names}

    def pull(self) -> int:
        """Download the finished chunks this process does not hold (object stores only); returns how many."""
        if self.remote is None:
            return 0
        have = {int(p.stem.split("-")[1]) for p in self.root.glob("chunk-*.json")}
        todo = sorted(self.finished() - have)

        def one(k: int) -> None:
            for p in (self.kept_path(k), self.dropped_path(k), self.marker(k)):  # the marker last
                storage.get_file(self._uri(p), p)

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, todo))
        return len(todo)

    def write_chunk(self, k: int, kept: pa.Table, dropped: pa.Table, counts: dict[str, Any]) -> None:
        atomic_write(self.kept_path(k), lambda p: pq.write_table(kept, p, compression="zstd"))
        atomic_write(self.dropped_path(k), lambda p: pq.write_table(dropped, p, compression="zstd"))
        atomic_write_json(self.marker(k), counts)
        self.publish(self.kept_path(k), self.dropped_path(k), self.marker(k))
        if self.remote is not None and not self.keep_local:
            for p in (self.marker(k), self.kept_path(k), self.dropped_path(k)):
                p.unlink()

    def counts(self, k: int) -> dict[str, Any]:
        return json.loads(self.marker(k).read_text())

    def read_kept(self, k: int) -> pa.Table:
        return pq.read_table(self.kept_path(k))

    def read_dropped(self, k: int) -> pa.Table:
        return pq.read_table(self.dropped_path(k))

    def path(self, name: str) -> Path:
        return self.root / name
