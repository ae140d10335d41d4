"""Hugging Face `datasets` features for a manifest: media as a sequence of ``datasets.Image``."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the storage type of ``datasets.Image``
IMAGE_STORAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


def image_column(media: pa.ChunkedArray) -> pa.Array:
    """Per row, ``{bytes, path}`` of each image and image page that ``datasets.Image`` can decode.

    PDF pages (they need rendering) and videos are left out; vectorized over the flattened media.
    """
    arr = media.combine_chunks()
    n = len(arr)
    if n == 0:
        return pa.array([], pa.list_(IMAGE_STORAGE))
    arr = pc.fill_null(arr, pa.scalar([], arr.type)) if arr.null_count else arr
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy()
    kind = flat.field("kind")
    fmt = pc.utf8_upper(pc.fill_null(flat.field("format"), ""))
    ok = pc.and_(pc.is_in(kind, pa.array(["image", "page"])), pc.not_equal(fmt, "PDF"))
    ok = pc.and_(ok, pc.or_(pc.is_valid(flat.field("bytes")), pc.is_valid(flat.field("uri"))))
    ok = pc.fill_null(ok, False)
    keep = flat.filter(ok)
    counts = np.bincount(parents[ok.to_numpy(zero_copy_only=False)], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    values = pa.StructArray.from_arrays([keep.field("bytes"), keep.field("uri")], fields=list(IMAGE_STORAGE))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def hf_features(schema: pa.Schema):
    """Features of the table: Arrow types as they are, ``images`` as ``Sequence(Image())``."""
    import datasets

    feats = datasets.Features.from_arrow_schema(schema.remove_metadata())
    if "images" in feats:
        feats["images"] = datasets.Sequence(datasets.Image())
    return feats
