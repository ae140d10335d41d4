"""Rows spilled to disk by the node block of a key column, read back one block at a time.

The global dedup step (components, representatives, the answer per file) works on
integers keyed by node number. Holding them for every row in a cluster grows with
the corpus, so each step scatters its rows to the block of their key (a run of
whole input files, about ``BLOCK_ROWS`` nodes) and the next step reads one block.
What is in memory is one block plus the write buffer, whatever the corpus.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from curation.arrays import grouped

#: nodes per block, aimed at (a block is a run of whole input files, so a large file makes a larger block)
BLOCK_ROWS = 250_000
#: rows buffered across all blocks before they are written (a new file per block that holds some)
BUFFER_ROWS = 250_000


def block_starts(files: Sequence[tuple[int, int]], block_rows: int | None = None) -> np.ndarray:
    """First node of every block: consecutive ``(first node, rows)`` files grouped until a block holds ``block_rows``."""
    size = BLOCK_ROWS if block_rows is None else block_rows
    starts = [0]
    held = 0
    for first, rows in files:
        if held >= size:
            starts.append(first)
            held = 0
        held += rows
    return np.asarray(starts, dtype=np.int64)


class Blocks:
    """A table scattered by ``block_of(key)`` into files under ``directory``; ``read(k)`` gives block ``k``'s rows.

    Rows of a block come back in the order they were added (files in write order), so a step that
    adds sorted runs block by block reads sorted blocks.
    """

    def __init__(self, directory: Path, starts: np.ndarray, schema: pa.Schema) -> None:
        self.dir = Path(directory)
        self.starts = starts
        self.schema = schema
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        self._buffers: list[list[pa.Table]] = [[] for _ in range(len(starts))]
        self._held = 0
        self._files: list[list[Path]] = [[] for _ in range(len(starts))]
        self.rows = np.zeros(len(starts), dtype=np.int64)  # rows added per block

    def __len__(self) -> int:
        return len(self.starts)

    def block_of(self, key: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, key, side="right") - 1

    def add(self, table: pa.Table, key: np.ndarray) -> None:
        """Append ``table``'s rows, each to the block of its ``key`` (order kept within a block)."""
        if table.num_rows == 0:
            return
        blk = self.block_of(key)
        self.rows += np.bincount(blk, minlength=len(self.starts))
        if blk.size and blk[0] == blk[-1] and np.all(blk == blk[0]):
            self._buffers[int(blk[0])].append(table)
        else:
            for k, rows in grouped(table, blk, len(self.starts)):
                self._buffers[k].append(rows)
        self._held += table.num_rows
        if self._held >= BUFFER_ROWS:
            self.flush()

    def flush(self) -> None:
        for k, parts in enumerate(self._buffers):
            if not parts:
                continue
            path = self.dir / f"b{k:05d}-{len(self._files[k]):05d}.arrow"
            feather.write_feather(pa.concat_tables(parts).cast(self.schema), path, compression="uncompressed")
            self._files[k].append(path)
            self._buffers[k] = []
        self._held = 0

    def runs(self, limit: int) -> list[list[int]]:
        """Consecutive blocks grouped so that a run holds at most ``limit`` rows (a larger block is a run alone)."""
        out: list[list[int]] = []
        held = 0
        for k, n in enumerate(self.rows.tolist()):
            if not out or held + n > limit:
                out.append([])
                held = 0
            out[-1].append(k)
            held += n
        return out

    def read(self, k: int) -> pa.Table:
        """Block ``k``'s rows (call after the last ``add``: buffered rows are written first)."""
        if self._held:
            self.flush()
        tables = [feather.read_table(p, memory_map=False) for p in self._files[k]]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def replace(self, k: int, table: pa.Table) -> None:
        """Block ``k`` becomes ``table`` (one file): a step that sorts or deduplicates a block in place."""
        if self._held:
            self.flush()
        for p in self._files[k]:
            p.unlink(missing_ok=True)
        path = self.dir / f"b{k:05d}-final.arrow"
        feather.write_feather(table.cast(self.schema), path, compression="uncompressed")
        self._files[k] = [path]

    def drop(self) -> None:
        """Delete the files (a step's input, once the next step has read every block)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        self._files = [[] for _ in range(len(self.starts))]
