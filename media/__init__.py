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
- JPEGs are decoded at a reduced scale (libjpeg DCT scaling, through
  simplejpeg or PIL draft) whenever the caller asks for a bounded size.
- :mod:`media.decoded` is the shared decode: one read and one decode per
  input for every consumer of a curation chunk; :mod:`media.counters` counts
  reads and decodes; :mod:`media.encode` holds the few encoders.
- Animated images (GIF, WebP, APNG, multi-page TIFF) yield their first frame.
- Video ``rotation`` is the clockwise rotation, in degrees, a player applies
  for display; ``width``/``height`` and decoded frames are in display
  orientation, whichever backend decodes them.
"""
from media.files import (
    DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, PDF_EXTENSIONS, VIDEO_EXTENSIONS, MediaError, MediaSource, check_file,
)
from media.image import ImageInfo, decode_image, image_info, load_image, open_image, reduce_image
from media.decoded import DecodedMedia, DecodeNeeds, SharedDecode, decode_media
from media.pdf import PdfPage, close_pdf, open_pdf, page_render_size, pdf_pages, render_pdf_page
from media.video import count_decoded_frames, probe_video, read_video_frames, sample_frame_indices, video_backend

__all__ = [
    "DEFAULT_MAX_PIXELS", "IMAGE_EXTENSIONS", "PDF_EXTENSIONS", "VIDEO_EXTENSIONS", "MediaError", "MediaSource",
    "check_file", "ImageInfo", "decode_image", "image_info", "load_image", "open_image", "reduce_image",
    "DecodedMedia", "DecodeNeeds", "SharedDecode", "decode_media", "PdfPage", "close_pdf", "open_pdf",
    "page_render_size", "pdf_pages", "render_pdf_page", "count_decoded_frames", "probe_video",
    "read_video_frames", "sample_frame_indices", "video_backend",
]
