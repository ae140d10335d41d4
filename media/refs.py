"""Decode a manifest media reference (one element of the `media` column) with the shared media module.

Readers (torch, notebook views) see references, not files: an image by path or
embedded bytes, a PDF page by path + page + dpi, a video by path. This module
turns a reference into pixels, so that decoding stays in `media`.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image

import media as M


def ref_source(ref: Mapping[str, Any]):
    """What to hand `media` for one reference: embedded bytes, else the local path."""
    data = ref.get("bytes")
    if data is not None:
        return bytes(data)
    uri = ref.get("uri")
    if uri is None:
        raise M.MediaError("missing", "media reference has neither uri nor bytes")
    return uri[7:] if uri.startswith("file://") else uri


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
    """`num_frames` evenly spaced frames, uint8 [n, H, W, 3] in display orientation."""
    path = ref_source(ref)
    total = ref.get("frames")
    if not total:
        total = M.probe_video(path)["frames"]
    return M.read_video_frames(path, M.sample_frame_indices(int(total), num_frames), max_side=max_side)


def thumbnail(ref: Mapping[str, Any], size: int = 128) -> Image.Image:
    """A small picture of any reference: the image, the page, or a video's middle frame."""
    if ref.get("kind") == "video":
        frames = decode_video_ref(ref, 3, max_side=size)
        return Image.fromarray(frames[len(frames) // 2])
    img = decode_image_ref(ref, max_side=size)
    img.thumbnail((size, size))
    return img
