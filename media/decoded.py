"""The shared decode: each input of a chunk is read once and decoded once, for every consumer.

A curation chain has several readers of the same pixels: the analyzers (scores),
the dedup signatures (byte hash, pixel hash, pHash, colour moments, frame
hashes, verification thumbnails) and the token counter (sizes). Each declares
what it needs as a :class:`DecodeNeeds`; the chain merges them into one
:class:`SharedDecode`, which decodes every media item of a chunk once, in a
small thread pool, into a :class:`DecodedMedia` that they all read:

- the encoded bytes, read from disk once (their digest is the byte hash, and
  they are what gets embedded);
- the header info (sizes, format, orientation);
- a grey image at the analysis size and an RGB image at the hashing size, both
  from one reduced decode (JPEG DCT scaling), or, when an exact pixel hash is
  asked for, from one full decode whose pixel digest is kept;
- PDFs: the page list (sizes, text layer) and the first pages rendered once;
- videos: the probe and the sampled frames, decoded once for the motion score,
  the frame hashes and the frame pixel hash.

See docs/media.md for the contract and the tolerance against separate decodes.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from media.counters import count
from media.digests import digest, file_digest, image_pixel_digest, pixel_digest
from media.files import DEFAULT_MAX_PIXELS, MediaError, check_file, read_bytes
from media.image import ImageInfo, _decode_errors, _load_image, draft_scale, reduce_image
from media.pdf import PdfPage, close_pdf, open_pdf, pdf_pages, render_pdf_page
from media.refs import ref_source
from media.thumbs import box_thumb, color_thumb, grey_thumb
from media.video import _fit, _resize_frames, count_decoded_frames, sample_frame_indices
from media.scenes import sample_video


@dataclass(frozen=True)
class DecodeNeeds:
    """What one consumer needs from each input; :meth:`merge` combines the consumers of a chain."""

    grey_side: int | None = None  # grey ("L") image, longer side at most this (analyzers)
    rgb_side: int | None = None  # RGB image, longer side at most this (pHash, colour, thumbnails)
    verify_side: int | None = None  # square grey BOX thumbnail of that RGB image (dedup verification, crop windows)
    full_pixels: bool = False  # exact pixel hash: one full decode, its RGB pixel digest kept
    byte_digest: bool = False  # XXH3-128 of the encoded bytes (media.digests)
    keep_bytes: bool = False  # keep the encoded bytes (embedding in the manifest)
    max_pixels: int | None = None  # decompression-bomb budget; None: no opinion (the default applies)
    pages: int = 0  # PDF pages rendered from the first (-1: every page)
    page_side: int | None = None  # longer side of those renders (RGB)
    page_text: bool = False  # the PDF's page list with its text layer
    check_pages: int = 0  # PDF pages rendered to prove they draw (-1: every page), at check_side (analyzers)
    check_side: int | None = None
    #: pages an OCR stage renders itself, once, at its own dpi (curation.enrich.ocr): (min_chars, max_pages or 0,
    #: always). Those pages are not rendered here; the OCR stage scores them instead
    ocr_pages: tuple[int, int, bool] | None = None
    video_frames: tuple[int, ...] = ()  # sample counts (evenly spaced, first and last included)
    video_side: int | None = None  # longer side of the decoded frames
    video_count_frames: bool = False  # decode every frame to count those that decode (the full-decode check)

    def merge(self, other: "DecodeNeeds") -> "DecodeNeeds":
        def top(a, b):
            return b if a is None else a if b is None else max(a, b)

        budgets = [m for m in (self.max_pixels, other.max_pixels) if m is not None]
        pages = -1 if -1 in (self.pages, other.pages) else max(self.pages, other.pages)
        return DecodeNeeds(
            grey_side=top(self.grey_side, other.grey_side), rgb_side=top(self.rgb_side, other.rgb_side),
            verify_side=top(self.verify_side, other.verify_side),
            full_pixels=self.full_pixels or other.full_pixels, byte_digest=self.byte_digest or other.byte_digest,
            keep_bytes=self.keep_bytes or other.keep_bytes, max_pixels=min(budgets) if budgets else None,
            pages=pages, page_side=top(self.page_side, other.page_side), page_text=self.page_text or other.page_text,
            check_pages=-1 if -1 in (self.check_pages, other.check_pages) else max(self.check_pages, other.check_pages),
            check_side=top(self.check_side, other.check_side),
            ocr_pages=self.ocr_pages or other.ocr_pages,
            video_frames=tuple(sorted(set(self.video_frames) | set(other.video_frames))),
            video_side=top(self.video_side, other.video_side),
            video_count_frames=self.video_count_frames or other.video_count_frames,
        )

    @property
    def budget(self) -> int:
        return DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels

    def wants(self, kind: str) -> bool:
        """Whether any consumer reads this kind of input (``image``, ``pdf``, ``video``)."""
        if kind == "video":
            return bool(self.video_frames) or self.byte_digest or self.video_count_frames
        if kind == "pdf":
            return self.page_text or self.pages != 0 or self.check_pages != 0 or self.byte_digest
        return bool(self.grey_side or self.rgb_side or self.full_pixels or self.byte_digest or self.keep_bytes)


@dataclass
class DecodedMedia:
    """One input, decoded once. Fields a consumer did not ask for stay ``None``.

    ``error`` is set instead of the pixels when the input cannot be used; the
    analyzers ledger it, the signatures skip it. Images: ``grey`` (mode L,
    transparency on white, longer side at most ``grey_side``) and ``rgb`` (mode
    RGB, longer side at most ``rgb_side``) come from the same decode, and so
    do the pHash and colour thumbnails (``hash_thumb``, ``color_thumb``). PDFs: ``renders[page]`` is an RGB image or the page's MediaError.
    Videos: ``frames`` are the union of the requested samples, see
    :meth:`video_frames`.
    """

    kind: str  # image | pdf | video
    uri: str | None  # the reference it was decoded from (None: embedded bytes)
    error: MediaError | None = None
    nbytes: int | None = None  # encoded size
    byte_digest: bytes | None = None
    data: bytes | None = None  # encoded bytes, when kept
    info: ImageInfo | None = None
    grey: Image.Image | None = None
    rgb: Image.Image | None = None
    rgb_grey: Image.Image | None = None  # ``rgb`` in grey ("L"): what every grey thumbnail of it is made from
    pixel_digest: bytes | None = None  # of the full RGB decode (with its shape)
    hash_thumb: np.ndarray | None = None  # float64 [32, 32] grey thumbnail the pHash runs on (media.thumbs)
    color_thumb: np.ndarray | None = None  # uint8 [16, 16, 3] thumbnail for colour moments
    verify_thumb: np.ndarray | None = None  # uint8 [verify_side, verify_side] grey BOX thumbnail of ``rgb``
    pages: list[PdfPage] | None = None
    renders: dict[int, Any] = field(default_factory=dict)
    video: dict | None = None  # probe_video's dict
    frame_indices: np.ndarray | None = None
    frames: np.ndarray | None = None  # uint8 [n, H, W, 3], RGB, display orientation
    decoded_frames: int | None = None  # frames that decode, every one decoded (``video_count_frames``)

    def check(self) -> "DecodedMedia":
        """Raise the input's MediaError, if any (analyzers turn it into a ledger row)."""
        if self.error is not None:
            raise self.error
        return self

    def video_frames(self, n: int, side: int | None = None) -> np.ndarray:
        """The ``n`` evenly spaced frames (as :func:`media.sample_frame_indices` picks them), at most ``side``."""
        self.check()
        assert self.video is not None and self.frames is not None and self.frame_indices is not None
        v = self.video
        want = int(v.get("first_frame", 0)) + sample_frame_indices(int(v.get("span_frames", v["frames"])), n)
        if want.size == 0 or self.frames.shape[0] == 0:
            return np.zeros((0, 0, 0, 3), np.uint8)
        rows = np.searchsorted(self.frame_indices, want)
        out = self.frames[rows]
        h, w = out.shape[1:3]
        th, tw = _fit(h, w, side)
        return _resize_frames(out, th, tw) if (th, tw) != (h, w) else out

    def page_image(self, page: int) -> Image.Image:
        """The render of a page (RGB); its MediaError if it did not draw; KeyError if never rendered."""
        self.check()
        got = self.renders[page]
        if isinstance(got, MediaError):
            raise got
        return got


def media_kind(ref: Mapping[str, Any]) -> str:
    """``video``, ``pdf`` (a PDF file or one of its pages) or ``image``."""
    if (ref.get("kind") or "").lower() == "video":
        return "video"
    return "pdf" if (ref.get("format") or "").upper() == "PDF" else "image"


def decode_media(ref: Mapping[str, Any], needs: DecodeNeeds) -> DecodedMedia:
    """Read and decode one media reference for ``needs``; never raises for a bad input (see ``error``)."""
    kind = media_kind(ref)
    out = DecodedMedia(kind=kind, uri=ref.get("uri"))
    _test_fault(out.uri)
    try:
        src = ref_source(ref)
        if kind == "video":
            _decode_video(src, needs, out, ref)
        elif kind == "pdf":
            _decode_pdf(src, needs, out)
        else:
            _decode_image(src, needs, out)
    except MediaError as exc:
        out.error = exc
    except OSError as exc:  # a file that went away mid-read: ledgered, never lost
        out.error = MediaError("unreadable", f"{ref.get('uri')}: {exc.strerror or exc}")
    return out


def _test_fault(uri: str | None) -> None:
    """Test-only faults, off unless set (tests/test_ray_failure.py): ``SMOLCURATE_TEST_DECODE_SLEEP`` seconds
    before each decode; a decode of a reference containing ``SMOLCURATE_TEST_DECODE_CRASH`` segfaults."""
    if os.environ.get("SMOLCURATE_TEST_DECODE_SLEEP"):
        time.sleep(float(os.environ["SMOLCURATE_TEST_DECODE_SLEEP"]))
    poison = os.environ.get("SMOLCURATE_TEST_DECODE_CRASH")
    if poison and uri and poison in uri:
        os.kill(os.getpid(), signal.SIGSEGV)


def _read(src: Any, needs: DecodeNeeds, out: DecodedMedia, kind: str) -> tuple[bytes, str]:
    data, label = read_bytes(src, kind)
    out.nbytes = len(data)
    if needs.byte_digest:
        out.byte_digest = digest(data)
    if needs.keep_bytes:
        out.data = data
    return data, label


def _decode_image(src: Any, needs: DecodeNeeds, out: DecodedMedia) -> None:
    data, label = _read(src, needs, out, "image")
    side = max(needs.grey_side or 0, needs.rgb_side or 0) or None
    draft = None
    if side and not needs.full_pixels:
        draft = ("RGB" if needs.rgb_side else "L", side)
    info, im, arr = _load_image(src, draft=draft, max_pixels=needs.budget, exif_transpose=True, data=data)
    out.info = info
    with _decode_errors(label):
        base = im
        if needs.full_pixels:
            # simplejpeg's own array when it is the pixels as they are, else Pillow's packed bytes
            out.pixel_digest = pixel_digest(arr) if arr is not None else image_pixel_digest(reduce_image(im, None, "RGB"))
            # the reductions start from the full decode box-reduced as DCT scaling would have
            base = _like_draft(im, info, side)
        if needs.grey_side:
            out.grey = reduce_image(base, needs.grey_side, "L")
        if needs.rgb_side:
            out.rgb = reduce_image(base, needs.rgb_side, "RGB")
            # converted to grey once: the pHash thumbnail, the verification thumbnail and the crop-window
            # thumbnails all start from it (converting is per pixel, so it commutes with their crops)
            out.rgb_grey = out.rgb.convert("L")
            out.hash_thumb = grey_thumb(out.rgb_grey)
            out.color_thumb = color_thumb(out.rgb)
            if needs.verify_side and min(out.rgb.size) >= 2:
                out.verify_thumb = box_thumb(out.rgb_grey, needs.verify_side)


def _like_draft(full: Image.Image, info: ImageInfo, side: int | None) -> Image.Image:
    """A full JPEG decode box-reduced by the factor DCT scaling would have used (a DCT-scaled pixel is a
    block mean), so scores from a full decode stay close to those from a reduced one; other formats as is."""
    if not side or info.format not in ("JPEG", "MPO"):
        return full
    scale = draft_scale(full.size, side)
    return full.reduce(scale) if scale > 1 else full


def _decode_pdf(src: Any, needs: DecodeNeeds, out: DecodedMedia) -> None:
    data, label = _read(src, needs, out, "pdf")
    doc = open_pdf(data, label=label)
    try:
        pages = pdf_pages(doc, text=needs.page_text)
        out.pages = pages
        skip = ocr_rendered_pages(pages, needs.ocr_pages)
        for pg in pages:
            # each page once, at the largest side any consumer wants it (the blank-page check's pages and
            # the hashed pages can differ)
            want = max((s for n, s in ((needs.pages, needs.page_side), (needs.check_pages, needs.check_side))
                        if s and (n == -1 or pg.index < n)), default=None)
            if want is None or pg.index in skip:
                continue
            side = max(pg.width_pt, pg.height_pt, 1e-6)
            try:
                out.renders[pg.index] = render_pdf_page(doc, pg.index, dpi=72.0 * want / side, mode="RGB")
            except MediaError as exc:
                out.renders[pg.index] = exc
    finally:
        close_pdf(doc)


def ocr_rendered_pages(pages: list[PdfPage], rule: tuple[int, int, bool] | None) -> set[int]:
    """Indices of the pages an OCR stage will render (its text layer is too short, or ``always``), in page order."""
    if not rule:
        return set()
    min_chars, max_pages, always = rule
    todo = [pg.index for pg in pages if always or len(pg.text.strip()) < min_chars]
    return set(todo[:max_pages] if max_pages else todo)


#: a video up to this size is read into memory once, and its byte hash, probe, sampled frames and any corrected
#: frame count all come from those bytes: one file read. A larger one is hashed while streamed and its decoders
#: open the path themselves: two reads, both counted (docs/media.md). The cap bounds what one decode thread
#: holds (decord copies the bytes once more into its own buffer)
VIDEO_IN_MEMORY_MAX = 256 << 20


class _ClipVideos:
    """Video files' bytes shared by the clips of each video within a chunk, by (path, size, mtime).

    The clips of one video are rows of their own, and they all decode from one read of its file. Two ways in:

    - clip expansion (curation.clips.expand) reads a video once for its scene scan and *holds* those bytes
      for the clip rows it made (:func:`hold_clip_video`): the decode of those clips, next in the same worker
      (the chunk's first stage reads it and decodes it), takes them, and the last one releases them. Held
      bytes total at most ``VIDEO_IN_MEMORY_MAX``; a video that does not fit is not held, and its clips read it
      again (counted);
    - a clip whose video is not held (a manifest of clips curated again) reads the file and keeps it for its
      siblings; those are dropped oldest first once everything kept passes ``VIDEO_IN_MEMORY_MAX``.

    Everything is emptied once a chunk is decoded (nothing is held between chunks); a thread asking for a
    file another thread is reading waits for that read instead of reading it again.
    """

    def __init__(self) -> None:
        self._items: dict[tuple[str, int, int], bytes] = {}
        self._uses: dict[tuple[str, int, int], int] = {}  # held videos: clip decodes still to take them
        self._reading: dict[tuple[str, int, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def hold(self, key: tuple[str, int, int], data: bytes, uses: int) -> bool:
        """Keep ``data`` for ``uses`` clip decodes; False (nothing kept) when it would pass the cap."""
        with self._lock:
            held = sum(len(self._items[k]) for k in self._uses)
            if uses <= 0 or held + len(data) > VIDEO_IN_MEMORY_MAX:
                return False
            self._items[key] = data
            self._uses[key] = uses
            self._trim(key)
        return True

    def _take(self, key: tuple[str, int, int]) -> bytes | None:
        """The bytes of ``key`` if present; a held video's last clip releases them (lock held)."""
        hit = self._items.get(key)
        if hit is not None and key in self._uses:
            self._uses[key] -= 1
            if self._uses[key] <= 0:
                del self._uses[key], self._items[key]
        return hit

    def _trim(self, keep: tuple[str, int, int]) -> None:
        """Drop kept (not held) videos, oldest first, while everything passes the cap (lock held)."""
        total = sum(len(v) for v in self._items.values())
        for k in list(self._items):
            if total <= VIDEO_IN_MEMORY_MAX:
                break
            if k != keep and k not in self._uses:
                total -= len(self._items.pop(k))

    def read(self, path: str, size: int, mtime_ns: int) -> bytes:
        key = (path, size, mtime_ns)
        with self._lock:
            hit = self._take(key)
            if hit is not None:
                return hit
            gate = self._reading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._take(key)
            if hit is not None:
                return hit
            data, _ = read_bytes(path, "video")
            with self._lock:
                self._items[key] = data
                self._trim(key)
                self._reading.pop(key, None)
        return data

    def clear(self) -> None:
        """Forget the bytes held (a chunk is decoded: nothing is held between chunks)."""
        with self._lock:
            self._items.clear()
            self._uses.clear()


_CLIP_VIDEOS = _ClipVideos()


def read_clip_video(path: str) -> tuple[bytes | None, tuple[str, int, int]]:
    """A local video's bytes for the scan that cuts it into clips (one counted read), and the key to hold them
    by (:func:`hold_clip_video`). ``None`` for a file over ``VIDEO_IN_MEMORY_MAX``: the scan streams the path.
    MediaError words a missing or unreadable file as any decoder does."""
    size = check_file(path)
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if size > VIDEO_IN_MEMORY_MAX:
        return None, key
    data, _ = read_bytes(path, "video")
    return data, key


def hold_clip_video(key: tuple[str, int, int], data: bytes | None, clips: int) -> bool:
    """Hand the bytes a clip scan read to the shared decode of its ``clips`` clip rows (see :class:`_ClipVideos`);
    True when held (not when ``data`` is None, ``clips`` is 0, or the chunk's held videos would pass the cap)."""
    return data is not None and _CLIP_VIDEOS.hold(key, data, clips)


def release_clip_videos() -> None:
    """Drop every held clip video: a new chunk is being cut (bytes an undecoded chunk left are stale)."""
    _CLIP_VIDEOS.clear()


def _video_bytes(src: str, ref: Mapping[str, Any]) -> bytes | None:
    """The video file's bytes, read once (None when it is over ``VIDEO_IN_MEMORY_MAX``: decode from the path)."""
    try:
        st = os.stat(src)
    except OSError:
        return read_bytes(src, "video")[0]  # the read words the error (missing, symlink loop, ...)
    if st.st_size > VIDEO_IN_MEMORY_MAX:
        return None
    if ref.get("start_s") is not None:  # a clip: its siblings read the same file
        return _CLIP_VIDEOS.read(src, st.st_size, st.st_mtime_ns)
    return read_bytes(src, "video")[0]


def _decode_video(src: Any, needs: DecodeNeeds, out: DecodedMedia, ref: Mapping[str, Any] | None = None) -> None:
    ref = ref or {}
    label = src if isinstance(src, str) else (ref.get("uri") or "<bytes>")
    frames_wanted = bool(needs.video_frames) or needs.video_count_frames
    if isinstance(src, str) and not frames_wanted:
        # only the byte hash: streamed, nothing held in memory
        check_file(src)
        out.nbytes = os.path.getsize(src)
        if needs.byte_digest:
            out.byte_digest = file_digest(src, "video")
        return
    data = _video_bytes(src, ref) if isinstance(src, str) else src
    if data is None:  # over the in-memory cap: hash while streaming, the decoders read the path again
        out.nbytes = os.path.getsize(src)
        if needs.byte_digest:
            out.byte_digest = file_digest(src, "video")
        count("read", "video")  # the decoders' own read of the file
        data = src
    else:
        out.nbytes = len(data)
        if needs.byte_digest:
            out.byte_digest = digest(data)
    if needs.video_frames:
        # a clip samples within its start_s/end_s; a header that overstates the frames is corrected (media.scenes)
        info, first, count_, idx, frames = sample_video(data, ref, needs.video_frames, needs.video_side, label=label)
        out.video = {**info, "first_frame": first, "span_frames": count_}
        out.frame_indices = idx
        out.frames = frames
    if needs.video_count_frames:
        out.decoded_frames = count_decoded_frames(data, label=label)


# --------------------------------------------------------------------------- the per-chunk store


def decode_threads(requested: int | None = None) -> int:
    """Threads for one chain's decode pool: ``requested`` (None: as many as allowed), capped by the CPUs this
    process may use. Inside a Ray worker that is the CPUs Ray assigned to it, so actors x threads never
    exceed the cluster's cores; elsewhere the process's CPU affinity."""
    try:
        budget = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        budget = os.cpu_count() or 1
    ray = sys.modules.get("ray")
    if ray is not None:
        try:
            if ray.is_initialized():
                ctx = ray.get_runtime_context()
                if ctx.get_actor_id() is not None or ctx.get_task_id() is not None:
                    budget = max(1, int(ctx.get_assigned_resources().get("CPU", 1)))
        except Exception:
            pass
    return max(1, min(budget, requested if requested else budget))


class SharedDecode:
    """The decoded inputs of the chunk a chain is working on, keyed by (input ordinal, media index).

    :meth:`prepare` (the chain's first operator) decodes every media item of a
    chunk in a thread pool; :meth:`get` returns an item's decode, decoding it
    on the spot when it was not prepared (an operator used on its own).
    Rows are keyed by the reader's ``_pos`` column; tables without it (eval
    sets, tests) are decoded per call and not cached.
    """

    def __init__(self, needs: DecodeNeeds | None = None, threads: int | None = 1) -> None:
        self.needs = needs or DecodeNeeds()
        self.requested_threads = threads
        self._store: dict[tuple[int, int], DecodedMedia] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def want(self, needs: DecodeNeeds) -> None:
        """Add a consumer's needs (operators call this when they are built)."""
        self.needs = self.needs.merge(needs)

    def __getstate__(self) -> dict:  # operators may be pickled to Ray workers: the pool stays behind
        state = dict(self.__dict__)
        state.update(_store={}, _pool=None, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def prepare(self, table) -> None:
        """Decode every media item of ``table`` once (forgetting the previous chunk)."""
        self._store = {}
        if "_pos" not in table.column_names or "media" not in table.column_names:
            return
        pos = table.column("_pos").to_pylist()
        media = table.column("media").to_pylist()
        needs = self.needs
        tasks = [(p, j, ref) for p, items in zip(pos, media) if p is not None
                 for j, ref in enumerate(items or ()) if needs.wants(media_kind(ref))]
        for (p, j, _), got in zip(tasks, self._map([t[2] for t in tasks])):
            self._store[(p, j)] = got
        _CLIP_VIDEOS.clear()  # the clips of a video are rows of one chunk: their shared read is done

    def _map(self, refs: list[Mapping[str, Any]]) -> Iterable[DecodedMedia]:
        threads = decode_threads(self.requested_threads)
        if threads <= 1 or len(refs) <= 1:
            return [decode_media(r, self.needs) for r in refs]
        with self._lock:
            if self._pool is None or self._pool._max_workers != threads:  # noqa: SLF001
                self._pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")
        needs = self.needs
        return list(self._pool.map(lambda r: decode_media(r, needs), refs))

    def get(self, pos: int | None, index: int, ref: Mapping[str, Any]) -> DecodedMedia:
        """The decode of media item ``index`` of the row with ordinal ``pos``."""
        if pos is not None:
            hit = self._store.get((pos, index))
            if hit is not None and hit.uri == ref.get("uri"):
                return hit
        got = decode_media(ref, self.needs)
        if pos is not None:
            self._store[(pos, index)] = got
        return got

    def clear(self) -> None:
        self._store = {}


def row_positions(table) -> list[int | None]:
    """The ``_pos`` of each row (the shared decode's row key), or Nones for a table without it."""
    if "_pos" in table.column_names:
        return table.column("_pos").to_pylist()
    return [None] * table.num_rows


def with_needs(shared: SharedDecode | None, needs: DecodeNeeds) -> SharedDecode:
    """``shared`` with ``needs`` added, or a private store for an operator used outside a chain."""
    if shared is None:
        return SharedDecode(needs)
    shared.want(needs)
    return shared


__all__ = [
    "DecodeNeeds", "DecodedMedia", "SharedDecode", "decode_media", "decode_threads", "media_kind",
    "row_positions", "with_needs", "replace",
]
