"""media: decoding of every media kind the project touches: images, PDF pages, videos.

This is the one place that opens media files, so that curation, dedup,
tokenization and the torch reader agree on sizes, orientation and failure
reasons. Failures raise :class:`MediaError` with a short machine ``reason``
(used verbatim as a ledger reason) and a human ``detail``.

Conventions (see docs/media.md):

- Image ``width``/``height`` are *display* sizes: EXIF orientation 5-8 swaps
  them, and :func:`open_image` applies the orientation.
- The pixel budget (``max_pixels``) is checked from the header before any
  decode, so a decompression bomb costs a header read and nothing more.
- JPEGs are decoded at a reduced scale (libjpeg DCT scaling via PIL draft)
  whenever the caller asks for a bounded size.
- Animated images (GIF, WebP, APNG, multi-page TIFF) yield their first frame.
- Video ``rotation`` is the clockwise rotation, in degrees, a player applies
  for display; ``width``/``height`` and decoded frames are in display
  orientation, whichever backend decodes them.
"""
from media.files import (
    DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, PDF_EXTENSIONS, VIDEO_EXTENSIONS, MediaError, MediaSource, check_file,
)
from media.image import ImageInfo, decode_image, image_info, open_image
from media.pdf import PdfPage, open_pdf, page_render_size, pdf_pages, render_pdf_page
from media.video import count_decoded_frames, probe_video, read_video_frames, sample_frame_indices, video_backend

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "PDF_EXTENSIONS", "VIDEO_EXTENSIONS", "MediaError", "MediaSource",
    "check_file", "ImageInfo", "decode_image", "image_info", "open_image", "PdfPage", "open_pdf",
    "page_render_size", "pdf_pages", "render_pdf_page", "count_decoded_frames", "probe_video",
    "read_video_frames", "sample_frame_indices", "video_backend",
]
