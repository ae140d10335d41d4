"""Bucket records: what every signature row contributes to the hash partitions (phase 1 of resolve)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.arrays import grouped
from curation.dedup.config import DedupConfig
from curation.dedup.keys import digest_keys, id_keys
from curation.dedup.layout import NODE_SCHEMA, RECORD_SCHEMA, ROLE_AGAINST, ROLE_EVAL, ROLE_NEW, TEXT_MODALITIES, U64
from curation.dedup.methods import RecordContext, methods
from curation.dedup.signatures import row_text


class RecordBuilder:
    """Turns batches of signature rows into bucket records, by asking every registered method for its own.

    The shared part is what several methods and decontamination read alike:
    the row roles, the text digest keys, the ``match_text`` salt of media keys
    and which texts may meet evaluation questions. Which records a method
    writes (digests, LSH bands, frame bands) is its ``records`` hook
    (:mod:`curation.dedup.methods`).
    """

    def __init__(self, config: DedupConfig, with_eval: bool) -> None:
        self.config = config
        self.with_eval = with_eval
        self.hooks = [m.records for m in methods() if m.records is not None]

    def records(self, t: pa.Table, nodes: np.ndarray, role: int) -> list[dict[str, np.ndarray | list]]:
        cfg = self.config
        n = t.num_rows
        out: list[dict] = []
        idkey = id_keys(t.column("id"))
        modality = labels(t.column("modality")) if "modality" in t.column_names else np.full(n, "", dtype=str)
        textkey = np.zeros(n, np.uint64)
        has_text = np.zeros(n, bool)
        if "sig_text" in t.column_names:
            textkey, has_text = digest_keys(t.column("sig_text"))
        # image_text rows keyed by their text too when `match_text` asks for it
        media_salt = np.where((modality == "image_text") & has_text, textkey, U64(0)) if cfg.image.match_text else np.zeros(n, np.uint64)
        # texts that may be compared: an evaluation question needs text.min_words words (too generic below)
        text_ok = has_text.copy()
        if role == ROLE_EVAL:
            texts = [row_text(a, b) for a, b in zip(column_values(t, "text"), column_values(t, "turns"))]
            words = np.fromiter((len(x.split()) for x in texts), dtype=np.int64, count=n)
            text_ok &= words >= cfg.text.min_words

        def emit(kind, keys, rows, dedup, seq=None, color=None, flat=None):
            if rows.size == 0:
                return
            out.append(
                {
                    "key": np.asarray(keys, dtype=np.uint64),
                    "kind": np.full(rows.size, kind, np.int8),
                    "node": nodes[rows],
                    "idkey": idkey[rows],
                    "role": np.full(rows.size, role, np.int8),
                    "dedup": np.asarray(dedup, dtype=bool) if not np.isscalar(dedup) else np.full(rows.size, dedup),
                    "seq": seq if seq is not None else pa.nulls(rows.size, pa.list_(pa.uint64())),
                    "color": color if color is not None else pa.nulls(rows.size, pa.list_(pa.float32())),
                    "flat": np.asarray(flat if flat is not None else np.zeros(rows.size), dtype=np.uint64),
                }
            )

        ctx = RecordContext(
            table=t, config=cfg, role=role, emit=emit, modality=modality,
            is_text_mod=np.isin(modality, TEXT_MODALITIES), textkey=textkey, has_text=has_text,
            media_salt=media_salt, text_ok=text_ok,
            dedup_role=role in (ROLE_NEW, ROLE_AGAINST), eval_role=role in (ROLE_NEW, ROLE_EVAL) and self.with_eval,
        )
        for hook in self.hooks:
            hook(ctx)
        return out


def labels(col: pa.ChunkedArray) -> np.ndarray:
    """A low-cardinality string column as a numpy string array (null as ""), through its dictionary: no object per row."""
    col = pc.fill_null(col.cast(pa.string()), "")
    enc = pc.dictionary_encode(col).combine_chunks()
    names = np.asarray(enc.dictionary.to_pylist() or [""], dtype=str)
    return names[np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)]


def column_values(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows


# ----------------------------------------------------------------------------- phase 1: scatter


class Scatter:
    """Appends rows to one Arrow IPC file per partition (``part-NNNNN.arrow``), a record batch per flush.

    Why IPC and not Parquet: a Parquet writer keeps every row group's metadata (~8.5 KB) until it closes,
    and the row groups here are one per partition per flush, so their number grows with the records times
    the partitions (both grow with the corpus): 44,000 row groups and ~370 MB on the driver at 10M text
    rows. An IPC file writer keeps 24 bytes per batch. The bucket records (:meth:`add`) and the semantic
    method's embeddings (:meth:`add_table`) are scattered this way.
    """

    #: rows held in memory across all partitions before they are written (~50 MB of bucket records)
    BUFFER_RECORDS = 500_000

    def __init__(self, directory: Path, partitions: int, schema: pa.Schema = RECORD_SCHEMA) -> None:
        self.dir = directory
        self.partitions = partitions
        self.schema = schema
        self.buffers: list[list[pa.Table]] = [[] for _ in range(partitions)]
        self.sizes = [0] * partitions
        self.rows = [0] * partitions  # rows added to each partition, written or not
        self.writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * partitions
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, rec: dict) -> None:
        """Bucket records (the dict :meth:`RecordBuilder.records` emits), each to the partition of its key."""
        table = pa.table(
            {
                "key": rec["key"],
                "kind": rec["kind"],
                "node": rec["node"],
                "idkey": rec["idkey"],
                "role": rec["role"],
                "dedup": rec["dedup"],
                "seq": rec["seq"].cast(pa.list_(pa.uint64())),
                "color": rec["color"].cast(pa.list_(pa.float32())),
                "flat": rec["flat"],
            },
            schema=RECORD_SCHEMA,
        )
        self.add_table(table, (rec["key"] % U64(self.partitions)).astype(np.int64))

    def add_table(self, table: pa.Table, part: np.ndarray) -> None:
        """Rows of ``self.schema``, row ``i`` to partition ``part[i]``."""
        for p, rows in grouped(table, part, self.partitions):
            self.buffers[p].append(rows)
            self.sizes[p] += rows.num_rows
            self.rows[p] += rows.num_rows
        if sum(self.sizes) >= self.BUFFER_RECORDS:  # bounded memory: one batch per partition
            for p in range(self.partitions):
                self._flush(p)

    def _writer(self, p: int) -> pa.ipc.RecordBatchFileWriter:
        if self.writers[p] is None:
            self.writers[p] = pa.ipc.new_file(str(self.dir / f"{partition_name(p)}.tmp"), self.schema,
                                              options=pa.ipc.IpcWriteOptions(compression="zstd"))
        return self.writers[p]

    def _flush(self, p: int) -> None:
        if not self.buffers[p]:
            return
        self._writer(p).write_table(pa.concat_tables(self.buffers[p]).combine_chunks())
        self.buffers[p], self.sizes[p] = [], 0

    def close(self) -> None:
        """Write what is buffered; every partition's file exists afterwards (empty or not)."""
        for p in range(self.partitions):
            self._flush(p)
            self._writer(p).close()
            os.replace(self.dir / f"{partition_name(p)}.tmp", self.dir / partition_name(p))


def partition_name(p: int) -> str:
    """The file name of bucket partition ``p`` (under ``buckets/``, locally and in the shared area)."""
    return f"part-{p:05d}.arrow"


def read_partition(path: Path) -> pa.Table:
    """A partition file written by :class:`Scatter`, whole (a task sorts it)."""
    with pa.OSFile(str(path)) as f:
        return pa.ipc.open_file(f).read_all()


def node_table(t: pa.Table, nodes: np.ndarray, role: int, set_index: int) -> pa.Table:
    n = t.num_rows
    area = t.column("sig_area") if "sig_area" in t.column_names else pa.nulls(n, pa.int64())
    textlen = t.column("sig_textlen") if "sig_textlen" in t.column_names else pa.nulls(n, pa.int32())
    nbytes = t.column("sig_nbytes") if "sig_nbytes" in t.column_names else pa.nulls(n, pa.int64())
    return pa.table(
        {
            "node": nodes,
            "id": t.column("id").cast(pa.string()),
            "role": np.full(n, role, np.int8),
            "set": np.full(n, set_index, np.int16),
            "area": pc.fill_null(area.cast(pa.int64()), 0),
            "nbytes": pc.fill_null(nbytes.cast(pa.int64()), 0),
            "textlen": pc.fill_null(textlen.cast(pa.int32()), 0),
        },
        schema=NODE_SCHEMA,
    )
