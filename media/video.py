"""Video: probe, frame sampling and decoding (decord, PyAV fallback), display orientation."""
from __future__ import annotations

import errno
import os
import re
from typing import Sequence

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


def _video_path(path: str | os.PathLike) -> str:
    p = os.fspath(path)
    check_file(p)
    return p


def probe_video(path: str | os.PathLike) -> dict:
    """Container metadata plus one decoded frame: width, height, fps, frames, duration, rotation.

    ``frames`` is the container's count, or ``round(duration * fps)`` for
    containers that do not store it (WebM, MKV). Decoding the first frame
    proves the stream decodes at all and reveals the display rotation.
    """
    p = _video_path(path)
    av = _av()
    count("probe", "video")
    try:
        with av.open(p, metadata_errors="ignore") as container:
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


def count_decoded_frames(path: str | os.PathLike) -> int:
    """Decode every frame with PyAV (slow, thorough); MediaError("undecodable") on a broken bitstream."""
    p = _video_path(path)
    av = _av()
    count("decode", "video")
    n = 0
    try:
        with av.open(p, metadata_errors="ignore") as container:
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
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray,
    *,
    max_side: int | None = None,
    backend: str | None = None,
    rotation: int | None = None,
) -> np.ndarray:
    """Frames at ``indices`` as ``uint8[n, H, W, 3]`` RGB in display orientation.

    Indices past the end are clamped to the last frame. ``max_side`` scales
    the frames down inside the decoder (cheaper for hashing and scores).
    ``rotation`` (from :func:`probe_video`) is an optional hint that saves a
    retry on rotated videos. Any decode failure raises MediaError("undecodable").
    """
    p = _video_path(path)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if (idx < 0).any():
        raise ValueError("frame indices must be non-negative")
    chosen = backend or video_backend()
    count("decode", "video")
    try:
        if chosen == "decord":
            return _read_decord(p, idx, max_side, rotation)
        return _read_av(p, idx, max_side)
    except MediaError:
        raise
    except Exception as exc:
        raise _decoder_error(exc, p) from None


def _decoder_error(exc: BaseException, p: str) -> MediaError:
    """A video decoder's exception as a ledger-ready MediaError: file problems keep their own reason."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENOENT):
            return _os_error(exc, p)
        return MediaError("undecodable", f"{p}: {exc}")
    return MediaError("undecodable", f"{p}: {type(exc).__name__}: {_clean_error(exc)}")


def _clean_error(exc: BaseException) -> str:
    """A decoder's message without what differs run to run (decord's log timestamps and source paths)."""
    lines = str(exc).strip().splitlines()
    text = lines[-1] if lines else ""
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\] ", "", text)
    text = re.sub(r"\S+\.(?:cc|cpp|h):\d+: ", "", text)
    return text[:300]


def _read_decord(p: str, idx: np.ndarray, max_side: int | None, rotation: int | None) -> np.ndarray:
    import decord

    # decord rotates frames to display orientation itself, but its scaler breaks
    # on 90/270-degree videos (wrong aspect or a size check failure): those are
    # decoded at native size and scaled here.
    native = decord.VideoReader(p, num_threads=1)
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
        scaled = decord.VideoReader(p, num_threads=1, width=w, height=h)
        try:
            batch = scaled.get_batch(uniq.tolist()).asnumpy()
        except decord.DECORDError:
            if rotation is not None:
                raise
            batch = _resize_frames(decord.VideoReader(p, num_threads=1).get_batch(uniq.tolist()).asnumpy(), h, w)
        if batch.shape[1:3] != (h, w):
            raise MediaError("undecodable", f"{p}: decoder returned {batch.shape[1:3]} frames, expected {(h, w)}")
    return np.ascontiguousarray(batch[inverse])


def _resize_frames(batch: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.Resampling.BILINEAR)) for f in batch])


def _read_av(p: str, idx: np.ndarray, max_side: int | None) -> np.ndarray:
    av = _av()
    got: dict[int, np.ndarray] = {}
    with av.open(p, metadata_errors="ignore") as container:
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

