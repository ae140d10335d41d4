"""The versioned Arrow schema of a manifest, and helpers to conform batches to it.

A manifest row is one training sample. The core columns below are fixed for a
format version; stages add *extension* columns (scores, signatures, dedup
clusters, token counts, repeat counts) that are declared up front so every shard
of one manifest has the same schema. See docs in README.md ("Manifest format").
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

import pyarrow as pa

FORMAT_VERSION = 1

MODALITIES = ("image", "image_text", "document", "text", "video")

#: One media reference. A sample holds a list of them (multi-image, PDF pages).
MEDIA_TYPE = pa.struct(
    [
        pa.field("uri", pa.string()),  # absolute path or URI; may be null when bytes are embedded
        pa.field("bytes", pa.binary()),  # optional embedded encoded bytes
        pa.field("kind", pa.string()),  # image | page | video
        pa.field("format", pa.string()),  # JPEG, PNG, WEBP, PDF, mp4, ...
        pa.field("width", pa.int32()),  # pixels (for pages: at `dpi`; for video: display size after rotation)
        pa.field("height", pa.int32()),
        pa.field("page", pa.int32()),  # 0-based page index for document pages
        pa.field("dpi", pa.float32()),  # render resolution of a page
        pa.field("duration", pa.float64()),  # seconds (video)
        pa.field("fps", pa.float64()),
        pa.field("frames", pa.int64()),
        pa.field("rotation", pa.int16()),  # degrees of display rotation metadata (video)
        pa.field("start_s", pa.float64()),  # a clip: its span on the source video, seconds [start_s, end_s)
        pa.field("end_s", pa.float64()),  # (duration and frames then describe the clip, not the file)
    ]
)

TURN_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])

CORE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("media", pa.list_(MEDIA_TYPE)),
    pa.field("text", pa.string()),
    pa.field("turns", pa.list_(TURN_TYPE)),
    pa.field("meta", pa.string()),  # JSON object with source-specific extras
)
CORE_SCHEMA = pa.schema(list(CORE_FIELDS))
CORE_NAMES = frozenset(f.name for f in CORE_FIELDS)

#: The ledger of dropped rows.
LEDGER_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("uri", pa.string()),
    ]
)

#: Version of the ledger layout. v1: the six columns of LEDGER_SCHEMA only. v2 (this one): those six, then
#: the row's own core columns (modality, media, text, turns, meta) and the manifest's extension columns
#: (scores, tokens, dup_cluster; not the sig_* hashes), so a dropped row keeps its media reference and every
#: score computed before it was dropped. manifest.json records ``ledger_version`` and the exact schema.
LEDGER_VERSION = 2

#: core columns a v2 ledger row carries besides the decision (all nullable: a row dropped at read has no media)
LEDGER_ROW_FIELDS: tuple[pa.Field, ...] = tuple(
    pa.field(f.name, f.type) for f in CORE_FIELDS if f.name not in ("id", "source")
)


def ledger_schema(data_schema: pa.Schema | None = None) -> pa.Schema:
    """The v2 ledger schema of a manifest whose kept rows have ``data_schema``.

    Signature columns (``sig_*``) are left out: they only matter to dedup, which has already decided.
    """
    fields = list(LEDGER_SCHEMA) + list(LEDGER_ROW_FIELDS)
    names = {f.name for f in fields}
    for f in data_schema or ():
        if f.name in names or f.name in CORE_NAMES or f.name.startswith("sig_"):
            continue
        fields.append(pa.field(f.name, f.type))
    return pa.schema(fields)


#: Extension column prefixes, documented so notebooks know what they hold.
EXTENSION_PREFIXES = {
    "score_": "filter scores (re-tune thresholds on the manifest)",
    "sig_": "dedup signatures (hashes)",
    "dup_": "dedup clusters",
    "tokens": "token counts under a tokenization strategy",
    "repeat": "mixture repeat count",
    "mix_": "mixture bookkeeping",
}


def make_id(source: str, key: str) -> str:
    """Stable sample id from the source name and the sample's own key, never its position."""
    return hashlib.blake2b(f"{source}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()


def build_schema(extra: Mapping[str, pa.DataType] | Iterable[pa.Field] | None = None) -> pa.Schema:
    """Core schema plus declared extension columns, in a stable order."""
    fields = list(CORE_FIELDS)
    if extra:
        items = extra.items() if isinstance(extra, Mapping) else ((f.name, f.type) for f in extra)
        for name, typ in items:
            if name in CORE_NAMES:
                raise ValueError(f"extension column {name!r} shadows a core column")
            fields.append(pa.field(name, typ))
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema, *, strict: bool = True) -> pa.Table:
    """Order, cast and null-fill `table` to `schema`; unknown columns are an error when strict."""
    if strict:
        unknown = [n for n in table.column_names if schema.get_field_index(n) < 0]
        if unknown:
            raise ValueError(f"columns {unknown} are not in the manifest schema; declare them as extension columns")
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if not col.type.equals(field.type):
                col = col.cast(field.type)
            cols.append(col)
        else:
            if not field.nullable:
                raise ValueError(f"required column {field.name!r} is missing")
            cols.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(cols, schema=schema)


def schema_to_json(schema: pa.Schema) -> list[dict]:
    """A readable description of the schema for manifest.json (the exact schema rides in the Parquet footer)."""
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]
