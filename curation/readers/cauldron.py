"""``format: cauldron``: The Cauldron and Docmatix (``images``: a sequence of ``Image``; ``texts``: a list of
``{user, assistant[, source]}``), saved with ``save_to_disk`` or written to Parquet.

A row becomes its turns in order (user, assistant, user, ...). Its images go at
the start of the first user turn as ``<image>`` placeholders, unless the text
already holds ``<image>`` placeholders, which then place them (and must number
as many as the images). Embedded image bytes stay embedded (``media.bytes``);
images given by path resolve against ``image_root`` (default: the table's
folder). Column names default to ``images`` and ``texts`` (``image_column``,
``turns_column`` rename them).

Read-stage ledger reasons: ``empty_texts`` (no turns), ``image_count_mismatch``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.readers.base import SourceContext
from curation.readers.columns import (
    IMAGE_TOKEN,
    TURNS,
    constant,
    media_count,
    media_from_cells,
    placeholder_counts,
    prefix_first_user,
    repeat_token,
)
from curation.readers.rows import assemble, first_reason, meta_json
from curation.readers.table import TableReader, row_keys, table_schema
from curation.readers.tabular import TableFile, find_tables
from manifests.errors import RecipeError
from manifests.schema import TURN_TYPE


def _is_turn_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_struct(t.value_type) \
        and t.value_type.get_field_index("user") >= 0 and t.value_type.get_field_index("assistant") >= 0


def _is_image_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


class CauldronReader(TableReader):
    name = "cauldron"
    kinds = frozenset({"image_text"})
    formats = frozenset({"parquet", "hf"})

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        schema = _first_schema(ctx)
        if schema is None:
            return False
        images = ctx.source.image_column or "images"
        texts = ctx.source.turns_column or "texts"
        return images in schema.names and texts in schema.names and _is_turn_list(schema.field(texts).type) \
            and _is_image_list(schema.field(images).type)

    def columns(self, ctx: SourceContext) -> tuple[str, str]:
        return ctx.source.image_column or "images", ctx.source.turns_column or "texts"

    def check_columns(self, ctx: SourceContext, names: list[str], path: str) -> None:
        images, texts = self.columns(ctx)
        for fld, col in (("image_column", images), ("turns_column", texts), ("id_column", ctx.source.id_column)):
            if col is not None and col not in names:
                raise ctx.error(f"{path} has no column {col!r} (columns: {', '.join(names)})", fld)

    def convert(self, ctx: SourceContext, table: pa.Table, uris: pa.Array, pos: np.ndarray, base: str) -> pa.Table:
        images_col, texts_col = self.columns(ctx)
        n = table.num_rows
        id_col = ctx.source.id_column or ("id" if "id" in table.column_names else None)
        keys = row_keys(table, id_col)
        media = media_from_cells(table.column(images_col), ctx.image_root or base)
        texts = table.column(texts_col).combine_chunks()
        if pa.types.is_large_list(texts.type):
            texts = texts.cast(pa.list_(texts.type.value_type))
        lengths = pc.fill_null(pc.list_value_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        flat = texts.flatten()
        m = len(flat)
        user = flat.field("user").cast(pa.string())
        assistant = flat.field("assistant").cast(pa.string())
        both = pa.concat_arrays([user, assistant])
        order = np.empty(2 * m, np.int64)
        order[0::2] = np.arange(m)
        order[1::2] = m + np.arange(m)
        roles = pa.array(["user", "assistant"]).take(pa.array(np.tile([0, 1], m).astype(np.int64)))
        items = pa.StructArray.from_arrays([roles, both.take(pa.array(order))], fields=list(TURN_TYPE))
        offsets = np.concatenate([[0], np.cumsum(2 * lengths)]).astype(np.int32)
        turns = pa.ListArray.from_arrays(pa.array(offsets), items, type=TURNS)
        empty = lengths == 0
        turns = pc.if_else(pa.array(empty), pa.nulls(n, TURNS), turns)
        n_img = media_count(media)
        placed = placeholder_counts(turns, IMAGE_TOKEN)
        turns = prefix_first_user(turns, repeat_token(IMAGE_TOKEN, np.where(placed == 0, n_img, 0)))
        mismatch = (placed > 0) & (placed != n_img)
        reason = first_reason(n, [(empty, "empty_texts"), (mismatch, "image_count_mismatch")])
        detail = pc.binary_join_element_wise(
            uris, constant(": ", n),
            pc.if_else(pa.array(empty), constant(f"{texts_col!r} holds no turns", n),
                       pc.binary_join_element_wise(pa.array(placed).cast(pa.string()), constant(" <image> placeholders for ", n),
                                                   pa.array(n_img).cast(pa.string()), constant(" images", n), "")), "")
        meta = meta_json(table, {images_col, texts_col})
        return assemble(ctx, keys, uris, pos, media=media, turns=turns, meta=meta,
                        fail_reason=reason, fail_detail=detail)


def _first_schema(ctx: SourceContext) -> pa.Schema | None:
    """The schema of the source's first Parquet/Arrow file (None for other files)."""
    try:
        found = find_tables(list(ctx.paths), "auto", ctx.source.split)
    except (RecipeError, OSError):  # detection never fails a recipe; planning reports the real problem
        return None
    for tf in found:
        if tf.format in ("parquet", "hf"):
            try:
                return table_schema(TableFile(tf.path, tf.format))
            except (OSError, pa.ArrowException):
                return None
    return None
