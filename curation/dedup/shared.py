"""Where the resolve stage keeps the files that its ``map_fn`` tasks read and write.

The per-partition work of resolve (bucket partitions, their edges and
candidates, semantic-dedup cluster partitions) runs as tasks that may land on
any machine of a cluster. Those files therefore live in a :class:`SharedArea`:

- the work directory itself when it is a local path (one machine, or a shared
  mount): plain files, exactly as before, no copy;
- a prefix on the job's object store (``s3://bucket/run/.staging/dedup``) when
  the output is a URI: the driver uploads each partition once it is complete,
  a task reads its partition from the store into its own scratch file and
  writes its results back as single PUTs, and the driver reads them from there.
  Nothing a task needs is left on the driver's disk, so nodes need no shared
  filesystem.

Phase markers of the per-partition work live beside its files (a marker is
written after its files, so a marker means they are complete); the driver's
own phases keep theirs in the local work directory.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from manifests import storage
from manifests.fsutil import atomic_write


class SharedArea:
    """A folder (``root`` a local path) or an object-store prefix (``root`` a URI), picklable for Ray tasks."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = os.fspath(root).rstrip("/")
        self.remote = storage.is_uri(self.root)

    def __repr__(self) -> str:
        return f"SharedArea({self.root!r})"

    def location(self, name: str) -> str:
        """Full path or URI of ``name`` (``"buckets/part-00000.arrow"``)."""
        return storage.join(self.root, name)

    def local(self, name: str) -> Path:
        """The local path of ``name`` (local areas only)."""
        assert not self.remote
        return Path(self.root) / name

    # -- tables ---------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table) -> None:
        """Write a parquet file atomically: a rename locally, one PUT on a store."""
        if not self.remote:
            atomic_write(self.local(name), lambda p: pq.write_table(table, p))
            return
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(self.location(name), sink.getvalue())

    def read_table(self, name: str) -> pa.Table:
        if not self.remote:
            return pq.read_table(self.local(name))
        data = storage.read_bytes(self.location(name))
        if data is None:
            raise FileNotFoundError(self.location(name))
        return pq.read_table(pa.BufferReader(data))

    def upload(self, path: Path, name: str) -> None:
        """Publish a finished local file as ``name`` (on a store the local copy is removed: the driver's disk keeps none)."""
        if not self.remote:
            target = self.local(name)
            if Path(path) != target:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
            return
        storage.put_file(path, self.location(name))
        Path(path).unlink()

    @contextlib.contextmanager
    def fetch(self, name: str) -> Iterator[Path]:
        """A local file holding ``name`` for the duration of the block (a task's own scratch copy on a store)."""
        if not self.remote:
            yield self.local(name)
            return
        scratch = Path(tempfile.mkdtemp(prefix="smolcurate-dedup-task-"))
        try:
            path = scratch / name.rsplit("/", 1)[-1]
            storage.get_file(self.location(name), path)
            yield path
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def exists(self, name: str) -> bool:
        return storage.exists(self.location(name)) if self.remote else self.local(name).is_file()

    # -- markers --------------------------------------------------------------
    def done(self, phase: str, fp: str) -> bool:
        """Whether ``phase`` finished for the inputs with fingerprint ``fp``."""
        name = f"{phase}.done"
        if not self.remote:
            marker = self.local(name)
            return marker.is_file() and marker.read_text() == fp
        data = storage.read_bytes(self.location(name))
        return data is not None and data.decode() == fp

    def mark(self, phase: str, fp: str) -> None:
        name = f"{phase}.done"
        if not self.remote:
            atomic_write(self.local(name), lambda p: p.write_text(fp))
        else:
            storage.write_bytes(self.location(name), fp.encode())

    def clear(self, sub: str) -> None:
        """Remove a sub-folder (and its markers) of the area."""
        if not self.remote:
            shutil.rmtree(self.local(sub), ignore_errors=True)
        else:
            storage.remove(self.location(sub), recursive=True)
