"""``format: obelics``: interleaved web documents whose ``images`` and ``texts`` lists align by position.

At each position exactly one of the two holds a value (None in the gaps), as
in OBELICS. A document becomes one row: its text is the texts in order with an
``<image>`` placeholder where each image stands (parts joined by blank lines),
its media the images in the same order. Images are URLs, paths (resolved
against ``image_root``) or HF ``Image`` structs with embedded bytes.
Read-stage ledger reasons: ``misaligned`` (lists of different lengths),
``empty_document``.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.readers.base import SourceContext
from curation.readers.cauldron import _first_schema
from curation.readers.columns import IMAGE_TOKEN, constant, media_from_cells
from curation.readers.rows import assemble, first_reason, meta_json
from curation.readers.table import TableReader, row_keys


def _is_text_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and (pa.types.is_string(t.value_type)
                                                                    or pa.types.is_large_string(t.value_type))


class ObelicsReader(TableReader):
    name = "obelics"
    kinds = frozenset({"image_text"})
    formats = frozenset({"parquet", "hf", "jsonl", "json"})

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        schema = _first_schema(ctx)
        images = ctx.source.image_column or "images"
        texts = ctx.source.text_column or "texts"
        return schema is not None and images in schema.names and texts in schema.names \
            and _is_text_list(schema.field(texts).type) and pa.types.is_list(schema.field(images).type)

    def check_columns(self, ctx: SourceContext, names: list[str], path: str) -> None:
        for fld, col in (("image_column", ctx.source.image_column or "images"),
                         ("text_column", ctx.source.text_column or "texts"), ("id_column", ctx.source.id_column)):
            if col is not None and col not in names:
                raise ctx.error(f"{path} has no column {col!r} (columns: {', '.join(names)})", fld)

    def convert(self, ctx: SourceContext, table: pa.Table, uris: pa.Array, pos: np.ndarray, base: str) -> pa.Table:
        images_col = ctx.source.image_column or "images"
        texts_col = ctx.source.text_column or "texts"
        n = table.num_rows
        keys = row_keys(table, ctx.source.id_column)
        images = table.column(images_col).combine_chunks()
        texts = table.column(texts_col).combine_chunks().cast(pa.list_(pa.string()))
        li = pc.fill_null(pc.list_value_length(images), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        lt = pc.fill_null(pc.list_value_length(texts), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        misaligned = li != lt
        # positions of aligned rows only (a misaligned row keeps no parts)
        keep_item = np.repeat(~misaligned, li)
        flat_img = images.flatten().filter(pa.array(keep_item))
        flat_txt = texts.flatten().filter(pa.array(np.repeat(~misaligned, lt)))
        lengths = np.where(misaligned, 0, li)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        aligned_imgs = pa.ListArray.from_arrays(pa.array(offsets), flat_img)
        media = media_from_cells(aligned_imgs, ctx.image_root or base)
        img_valid = pc.is_valid(flat_img) if not pa.types.is_struct(flat_img.type) else \
            pc.or_(pc.is_valid(flat_img.field("bytes")), pc.is_valid(flat_img.field("path")))
        piece = pc.if_else(img_valid, constant(IMAGE_TOKEN, len(flat_img)), flat_txt)
        present = pc.is_valid(piece).to_numpy(zero_copy_only=False)
        rows_of = np.repeat(np.arange(n), lengths)
        counts = np.bincount(rows_of[present], minlength=n)
        poffsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        pieces = pa.ListArray.from_arrays(pa.array(poffsets), piece.filter(pa.array(present)))
        text = pc.binary_join(pieces, "\n\n")
        empty = (counts == 0) & ~misaligned
        text = pc.if_else(pa.array(counts == 0), pa.nulls(n, pa.string()), text)
        reason = first_reason(n, [(misaligned, "misaligned"), (empty, "empty_document")])
        detail = pc.binary_join_element_wise(uris, constant(": ", n), pa.array(li).cast(pa.string()),
                                             constant(" images, ", n), pa.array(lt).cast(pa.string()), constant(" texts", n), "")
        meta = meta_json(table, {images_col, texts_col})
        return assemble(ctx, keys, uris, pos, media=media, text=text, meta=meta, fail_reason=reason, fail_detail=detail)
