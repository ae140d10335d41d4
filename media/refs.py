"""Decode a manifest media reference (one element of the `media` column) with the shared media module.

Readers (torch, notebook views) see references, not files: an image by path,
embedded bytes, or a member of a container (a tar shard member, a Parquet cell:
see `media.containers`), a PDF page by path + page + dpi, a video by path. This
module turns a reference into something `media` decodes, so that every consumer
(filters, dedup signatures, thumbnails, the torch reader, `tokens`, the
ablation loader) resolves references the same way.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

import media as M
from media.containers import container_path, container_scheme, read_container


def ref_source(ref: Mapping[str, Any]):
    """What to hand `media` for one reference: embedded bytes, a container member's bytes, else the local path.

    A container member is read in place (one positioned read of a tar member,
    one row group of a Parquet file), never extracted to disk.
    """
    data = ref.get("bytes")
    if data is not None:
        return bytes(data)
    uri = ref.get("uri")
    if uri is None:
        raise M.MediaError("missing", "media reference has neither uri nor bytes")
    if container_scheme(uri) is not None:
        return read_container(uri)
    from manifests.storage import is_uri

    if is_uri(uri):  # an object on a store (s3://...): its bytes, read with the store's credentials and retries
        from manifests.errors import UserError
        from manifests.storage import StoreUnavailable, read_bytes

        try:
            data = read_bytes(uri)
        except StoreUnavailable:
            raise  # the store is down, not the input bad: the chunk fails and the rerun resumes
        except UserError as exc:
            raise M.MediaError("unreadable", str(exc)) from None
        if data is None:
            raise M.MediaError("missing", f"{uri}: no such object")
        return data
    return uri.removeprefix("file://")


def ref_location(ref: Mapping[str, Any]) -> str | None:
    """The local file a reference depends on (the shard or Parquet file for a container member), or None."""
    uri = ref.get("uri")
    if uri is None or ref.get("bytes") is not None:
        return None
    if container_scheme(uri) is not None:
        return container_path(uri)
    return uri.removeprefix("file://")


def _is_pdf_page(ref: Mapping[str, Any]) -> bool:
    return ref.get("kind") == "page" and (ref.get("format") or "PDF").upper() == "PDF"


def decode_image_ref(ref: Mapping[str, Any], max_side: int | None = None) -> Image.Image:
    """An RGB image for an image or document-page reference (pages re-rendered at their recorded dpi)."""
    if _is_pdf_page(ref):
        dpi = float(ref.get("dpi") or 100.0)
        if max_side and ref.get("width") and ref.get("height"):
            dpi = min(dpi, dpi * max_side / max(int(ref["width"]), int(ref["height"])))
        return M.render_pdf_page(ref_source(ref), int(ref.get("page") or 0), dpi=dpi)
    return M.open_image(ref_source(ref), max_side=max_side)


def decode_video_ref(ref: Mapping[str, Any], num_frames: int, max_side: int | None = None) -> np.ndarray:
    """`num_frames` evenly spaced frames, uint8 [n, H, W, 3] in display orientation.

    A clip reference (``start_s``/``end_s``) is sampled within the clip; a video whose header overstates
    its frames is sampled within what decodes (`media.scenes.sample_video`).
    """
    from media.scenes import sample_video

    return sample_video(ref_source(ref), ref, (num_frames,), max_side)[4]


def thumbnail(ref: Mapping[str, Any], size: int = 128) -> Image.Image:
    """A small picture of any reference: the image, the page, or a video's middle frame."""
    if ref.get("kind") == "video":
        frames = decode_video_ref(ref, 3, max_side=size)
        return Image.fromarray(frames[len(frames) // 2])
    img = decode_image_ref(ref, max_side=size)
    img.thumbnail((size, size))
    return img
