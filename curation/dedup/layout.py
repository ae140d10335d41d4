"""The on-disk layout of the resolve stage: record kinds, roles and the parquet schemas.

Shared by the phases in :mod:`curation.dedup.records`, :mod:`curation.dedup.buckets`,
the method modules (:mod:`curation.dedup.methods`) and :mod:`curation.dedup.clusters`.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

U64 = np.uint64
#: bump when the on-disk intermediate layout changes, so old work directories are not resumed from
RESOLVE_VERSION = 4  # 2: image candidates verified in their own phase; 3: partitions are Arrow IPC files;
#: 4: id and multi-image keys are vectorized hashes (keys.id_keys, keys.list_keys); semantic partitions are IPC files

ROLE_NEW, ROLE_AGAINST, ROLE_EVAL = 0, 1, 2
#: record and edge kind numbers (stored in the work directory). What a kind means -- its method, bucket
#: rule, check and ledger naming -- is declared by the method that owns it (curation.dedup.methods);
#: the *_ITEM kinds exist only to meet evaluation images one by one; 8 is curation.dedup.methods.semantic
K_BYTES, K_PIXELS, K_TEXT, K_PHASH, K_VHASH, K_MINHASH, K_PIXEL_ITEM, K_PHASH_ITEM = range(8)
TEXT_MODALITIES = ("text", "document")
PAIR_CHUNK = 2_000_000  # candidate pairs verified per numpy pass

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_cluster", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.uint64()),
        pa.field("kind", pa.int8()),
        pa.field("node", pa.int64()),
        pa.field("idkey", pa.uint64()),
        pa.field("role", pa.int8()),
        pa.field("dedup", pa.bool_()),  # may form a dedup edge (else only meets eval rows)
        pa.field("seq", pa.list_(pa.uint64())),  # perceptual hashes to verify against
        pa.field("color", pa.list_(pa.float32())),  # chroma moments per hash (images)
        pa.field("flat", pa.uint64()),  # bit p set: frame p is flat (video)
    ]
)

EDGE_SCHEMA = pa.schema(
    [
        pa.field("a", pa.int64()),
        pa.field("b", pa.int64()),
        pa.field("kind", pa.int8()),
        pa.field("dist", pa.float32()),
        pa.field("contam", pa.bool_()),
    ]
)

NODE_SCHEMA = pa.schema(
    [
        pa.field("node", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("role", pa.int8()),
        pa.field("set", pa.int16()),
        pa.field("area", pa.int64()),
        pa.field("nbytes", pa.int64()),
        pa.field("textlen", pa.int32()),
    ]
)

MapFn = Callable[[Callable[[int], Any], Sequence[int]], Iterable[Any]]
