"""Files and errors shared by every decoder: the ledger-ready MediaError, file checks, stream opening."""
from __future__ import annotations

import errno
import io
import os
import stat
from typing import IO, Union

from media.counters import count


#: PIL's own default budget (about 89.5 megapixels); configurable per call.
DEFAULT_MAX_PIXELS = 89_478_485

MediaSource = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes]]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif",
     ".ppm", ".pgm", ".pbm", ".pnm", ".mpo"}
)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov"})
PDF_EXTENSIONS = frozenset({".pdf"})


class MediaError(Exception):
    """A file that cannot be used, with a ledger-ready ``reason`` and a human ``detail``.

    Reasons: ``zero_bytes``, ``unreadable``, ``symlink_loop``, ``missing``,
    ``undecodable``, ``truncated``, ``decompression_bomb``, ``encrypted``,
    ``no_video_stream``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


# --------------------------------------------------------------------------- files


def _os_error(exc: OSError, what: str) -> MediaError:
    if exc.errno == errno.ELOOP:
        return MediaError("symlink_loop", f"{what}: too many levels of symbolic links")
    if exc.errno == errno.ENOENT:
        return MediaError("missing", f"{what}: no such file")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MediaError("unreadable", f"{what}: permission denied")
    if exc.errno == errno.EISDIR:
        return MediaError("unreadable", f"{what}: is a directory")
    return MediaError("unreadable", f"{what}: {exc.strerror or exc}")


def check_file(path: str | os.PathLike) -> int:
    """Size of a readable, non-empty regular file; MediaError otherwise.

    Permission is checked with ``access`` so problems show up as
    ``unreadable`` before a decoder turns them into a confusing format error.
    """
    p = os.fspath(path)
    size = _stat_file(p)
    if not os.access(p, os.R_OK):
        raise MediaError("unreadable", f"{p}: permission denied")
    return size


def _stat_file(p: str) -> int:
    """Size of a non-empty regular file, from stat alone (opening a FIFO would block)."""
    try:
        st = os.stat(p)
    except OSError as exc:
        raise _os_error(exc, p) from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaError("unreadable", f"{p}: not a regular file")
    if st.st_size == 0:
        raise MediaError("zero_bytes", f"{p}: empty file")
    return st.st_size


def _as_stream(src: MediaSource) -> tuple[IO[bytes] | str, str]:
    """A path or stream PIL/pypdfium2 can read, and a label for messages."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise MediaError("zero_bytes", "<bytes>: empty")
        return io.BytesIO(bytes(src)), "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        p = os.fspath(src)
        check_file(p)
        return p, p
    return src, getattr(src, "name", "<stream>")



def read_bytes(src: MediaSource, kind: str = "image") -> tuple[bytes, str]:
    """The whole encoded input, read from disk once (counted), and a label for messages.

    The shared decode reads a file with this and then decodes, hashes and
    embeds those same bytes, so no consumer opens the file again.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise MediaError("zero_bytes", "<bytes>: empty")
        return bytes(src), "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        p = os.fspath(src)
        _stat_file(p)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise _os_error(exc, p) from None
        count("read", kind)
        if not data:
            raise MediaError("zero_bytes", f"{p}: empty file")
        return data, p
    data = src.read()
    return data, getattr(src, "name", "<stream>")
