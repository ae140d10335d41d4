"""Video: probe, frame sampling and decoding (decord, PyAV fallback), display orientation."""
from __future__ import annotations

import errno
import io
import os
import re
import tempfile
from contextlib import contextmanager
from typing import Iterator, Sequence, Union

import numpy as np
from PIL import Image

from media.counters import count
from media.files import MediaError, _os_error, check_file


# --------------------------------------------------------------------------- video


def video_backend() -> str:
    """``decord`` where it imports, else ``av``; ``SMOLCURATE_VIDEO_BACKEND`` overrides."""
    forced = os.environ.get("SMOLCURATE_VIDEO_BACKEND", "").strip().lower()
    if forced in ("av", "pyav"):
        return "av"
    if forced == "decord":
        return "decord"
    try:
        import decord  # noqa: F401

        return "decord"
    except Exception:
        return "av"


_AV_QUIET = False


def _av():
    global _AV_QUIET
    import av

    if not _AV_QUIET:
        try:
            av.logging.set_level(None)
        except Exception:
            pass
        _AV_QUIET = True
    return av


#: a video to decode: a path, or its encoded bytes already in memory (the shared decode reads a file once and
#: hashes, probes and decodes those bytes; a tar member or an object on a store arrives as bytes too)
VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview]


def _video_input(src: VideoSource, label: str | None = None) -> tuple[str | bytes, str]:
    """``(what the decoders open, label for messages)``: a checked readable file's path, or the bytes as they are.

    ``label`` names in-memory bytes in messages and ledger details (the path they were read from).
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        name = label or "<bytes>"
        if len(src) == 0:
            raise MediaError("zero_bytes", f"{name}: empty")
        return (src if isinstance(src, bytes) else bytes(src)), name
    p = os.fspath(src)
    check_file(p)
    return p, label or p


def _open_av(src: str | bytes):
    """A PyAV container on a path or on in-memory bytes (a BytesIO over bytes shares them, no copy)."""
    return _av().open(io.BytesIO(src) if isinstance(src, bytes) else src, metadata_errors="ignore")


@contextmanager
def _decord_path(src: str | bytes) -> Iterator[str]:
    """A path decord can open for ``src``: the path itself, or in-memory bytes behind an anonymous memory file.

    decord's own file-like input (its BytesIO reader) mishandles the end of a
    truncated container and crashes the process (a segfault on an AVI cut
    short, tests/test_decode_once.py); through a memory file decord reads the
    bytes with FFmpeg's ordinary file input, exactly as it reads a path, and
    nothing touches the disk. Where ``memfd_create`` is missing (not Linux) a
    temporary file stands in.
    """
    if not isinstance(src, bytes):
        yield src
        return
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("smolcurate-video", getattr(os, "MFD_CLOEXEC", 0))
        try:
            view = memoryview(src)
            while view:
                view = view[os.write(fd, view):]
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(suffix=".video") as fh:  # pragma: no cover - platforms without memfd
        fh.write(src)
        fh.flush()
        yield fh.name


def _open_decord(path: str, **kwargs):
    import decord

    return decord.VideoReader(path, num_threads=1, **kwargs)


def probe_video(path: VideoSource, *, label: str | None = None) -> dict:
    """Container metadata plus one decoded frame: width, height, fps, frames, duration, rotation.

    ``frames`` is the container's count, or ``round(duration * fps)`` for
    containers that do not store it (WebM, MKV). Decoding the first frame
    proves the stream decodes at all and reveals the display rotation.
    ``path`` may be the file's bytes (``label`` then names them in errors).
    """
    src, p = _video_input(path, label)
    count("probe", "video")
    try:
        with _open_av(src) as container:
            if not container.streams.video:
                raise MediaError("no_video_stream", f"{p}: no video stream")
            stream = container.streams.video[0]
            cc = stream.codec_context
            width, height = int(cc.width or 0), int(cc.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000.0
            else:
                duration = 0.0
            frames = int(stream.frames or 0)
            if frames <= 0 and duration > 0 and fps > 0:
                frames = int(round(duration * fps))
            if duration <= 0 and frames > 0 and fps > 0:
                duration = frames / fps
            first = None
            for frame in container.decode(stream):
                first = frame
                break
            if first is None:
                raise MediaError("undecodable", f"{p}: no frame decodes")
            rotation = (-int(round(getattr(first, "rotation", 0) or 0))) % 360
            if not width or not height:
                width, height = first.width, first.height
    except MediaError:
        raise
    except Exception as exc:  # PyAV raises FFmpegError subclasses and ValueError for broken input
        raise _decoder_error(exc, p) from None
    if rotation in (90, 270):
        width, height = height, width
    return {"width": width, "height": height, "fps": fps, "frames": frames, "duration": duration, "rotation": rotation}


def count_decoded_frames(path: VideoSource, *, label: str | None = None) -> int:
    """Decode every frame with PyAV (slow, thorough); MediaError("undecodable") on a broken bitstream."""
    src, p = _video_input(path, label)
    count("decode", "video")
    n = 0
    try:
        with _open_av(src) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                n += 1
    except Exception as exc:
        raise MediaError("undecodable", f"{p}: frame {n}: {type(exc).__name__}: {exc}") from None
    return n


def sample_frame_indices(frames: int, n: int) -> np.ndarray:
    """``n`` frame indices evenly spaced from the first to the last frame (fewer for short videos).

    Including the last frame matters: reading it exercises the whole
    bitstream, which is how a broken tail (a corrupted container) shows up.
    """
    if frames <= 0 or n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, frames - 1, n)).astype(np.int64))


def _fit(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(2, int(round(h * s))) // 2 * 2, max(2, int(round(w * s))) // 2 * 2


def read_video_frames(
    path: VideoSource,
    indices: Sequence[int] | np.ndarray,
    *,
    max_side: int | None = None,
    backend: str | None = None,
    rotation: int | None = None,
    label: str | None = None,
) -> np.ndarray:
    """Frames at ``indices`` as ``uint8[n, H, W, 3]`` RGB in display orientation.

    Indices past the end are clamped to the last frame. ``max_side`` scales
    the frames down inside the decoder (cheaper for hashing and scores).
    ``rotation`` (from :func:`probe_video`) is an optional hint that saves a
    retry on rotated videos. Any decode failure raises MediaError("undecodable").
    ``path`` may be the file's bytes (``label`` then names them in errors).
    """
    src, p = _video_input(path, label)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if (idx < 0).any():
        raise ValueError("frame indices must be non-negative")
    chosen = backend or video_backend()
    count("decode", "video")
    try:
        if chosen == "decord":
            with _decord_path(src) as path_:
                try:
                    return _read_decord(path_, p, idx, max_side, rotation)
                except MediaError:
                    raise
                except Exception as exc:  # a memory file's name is not the input's: messages name the input
                    raise _decoder_error(exc, p, alias=path_) from None
        return _read_av(src, p, idx, max_side)
    except MediaError:
        raise
    except Exception as exc:
        raise _decoder_error(exc, p) from None


def _decoder_error(exc: BaseException, p: str, alias: str | None = None) -> MediaError:
    """A video decoder's exception as a ledger-ready MediaError: file problems keep their own reason.

    ``alias``: the name the decoder was given for the input (a memory file), replaced by ``p`` in its message.
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOENT):
            return _os_error(exc, p)
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {_clean_error(exc)}"
    if alias and alias != p:
        text = text.replace(alias, p)
    # PyAV names in-memory input '<none>': the message names the file the bytes were read from, as for a path
    text = text.replace("'<none>'", f"'{p}'")
    return MediaError("undecodable", f"{p}: {text}")


def _clean_error(exc: BaseException) -> str:
    """A decoder's message without what differs run to run (decord's log timestamps and source paths)."""
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else ""
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\] ", "", text)
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+: ", "", text)
    return text[:300]


def _read_decord(src: str, p: str, idx: np.ndarray, max_side: int | None, rotation: int | None) -> np.ndarray:
    import decord

    # decord rotates frames to display orientation itself, but its scaler breaks
    # on 90/270-degree videos (wrong aspect or a size check failure): those are
    # decoded at native size and scaled here.
    native = _open_decord(src)
    n = len(native)
    if n == 0:
        raise MediaError("undecodable", f"{p}: no frames")
    clamped = np.minimum(idx, n - 1)
    uniq, inverse = np.unique(clamped, return_inverse=True)
    h0, w0 = (int(v) for v in native[0].shape[:2])
    h, w = _fit(h0, w0, max_side)
    if (h, w) == (h0, w0):
        batch = native.get_batch(uniq.tolist()).asnumpy()
    elif rotation in (90, 270):
        batch = _resize_frames(native.get_batch(uniq.tolist()).asnumpy(), h, w)
    else:
        del native
        scaled = _open_decord(src, width=w, height=h)
        try:
            batch = scaled.get_batch(uniq.tolist()).asnumpy()
        except decord.DECORDError:
            if rotation is not None:
                raise
            batch = _resize_frames(_open_decord(src).get_batch(uniq.tolist()).asnumpy(), h, w)
        if batch.shape[1:3] != (h, w):
            raise MediaError("undecodable", f"{p}: decoder returned {batch.shape[1:3]} frames, expected {(h, w)}")
    return np.ascontiguousarray(batch[inverse])


def _resize_frames(batch: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in batch])


def _read_av(src: str | bytes, p: str, idx: np.ndarray, max_side: int | None) -> np.ndarray:
    got: dict[int, np.ndarray] = {}
    with _open_av(src) as container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"{p}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        tb = float(stream.time_base) if stream.time_base else 0.0
        start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
        can_seek = fps > 0 and tb > 0
        gap = max(2 * fps, 48)  # below this many frames sequential decoding beats a seek
        frames = container.decode(stream)
        position: int | None = -1  # index of the last decoded frame; None right after a seek
        last = None
        for target in sorted({int(i) for i in idx}):
            if can_seek and position is not None and target - position > gap:
                container.seek(int((start + target / fps) / tb), stream=stream, backward=True, any_frame=False)
                frames = container.decode(stream)
                position = None
            while position is None or position < target:
                frame = next(frames, None)
                if frame is None:
                    break  # past the end: clamp to the last decoded frame
                if frame.pts is not None and can_seek:
                    position = int(round((float(frame.pts) * tb - start) * fps))
                else:
                    position = (position if position is not None else -1) + 1
                last = frame
            if last is None:
                raise MediaError("undecodable", f"{p}: no frame decodes")
            got[target] = _av_rgb(last, max_side)
    return np.stack([got[int(i)] for i in idx])


def _av_rgb(frame, max_side: int | None) -> np.ndarray:
    rot = (-int(round(getattr(frame, "rotation", 0) or 0))) % 360
    h, w = frame.height, frame.width
    dh, dw = (w, h) if rot in (90, 270) else (h, w)
    th, tw = _fit(dh, dw, max_side)
    sh, sw = (tw, th) if rot in (90, 270) else (th, tw)
    if (sh, sw) != (h, w):
        arr = frame.to_ndarray(format="rgb24", width=sw, height=sh)
    else:
        arr = frame.to_ndarray(format="rgb24")
    if rot:
        arr = np.rot90(arr, k=(-rot // 90) % 4)
    return np.ascontiguousarray(arr)

