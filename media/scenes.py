"""One decoding pass over a whole video: true frame count, timestamps, broken segments and scene cuts.

:func:`scan_video` decodes every frame once with PyAV, scaled inside swscale to
a small analysis width (PySceneDetect's default: 256 pixels), packet by packet
so that a corrupt packet in the middle costs only the frames it breaks. It
returns, per decoded frame, the presentation time and PySceneDetect's
content score (mean absolute change of hue, saturation and value between
consecutive frames, HSV as OpenCV computes it), computed in batches with
numpy. :func:`content_cuts` applies the detector's threshold and minimum
scene length.

The same pass is what proves how many frames really decode: a container
whose header claims 444 frames of which 68 decode reports 68 here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from media.counters import count as count_event
from media.files import MediaError
from media.video import VideoSource, _av, _decoder_error, _open_av, _video_input

#: PySceneDetect's ContentDetector defaults
DEFAULT_THRESHOLD = 27.0
DEFAULT_MIN_SCENE_FRAMES = 15
#: analysis width (PySceneDetect downscales to at least 256 pixels wide)
SCAN_WIDTH = 256
_BATCH = 64  # frames converted to HSV and differenced together


@dataclass
class VideoScan:
    """What one full decoding pass learned about a video (times in seconds from the stream start)."""

    fps: float  # the container's average rate
    width: int  # display size (after rotation) and the clockwise display rotation, as probe_video reports them
    height: int
    rotation: int
    header_frames: int  # the container's frame count (or duration * fps)
    header_duration: float
    times: np.ndarray  # float64 [n]: presentation time of each decoded frame, in decode-output order
    scores: np.ndarray  # float32 [n]: content score vs the previous decoded frame (0 for the first)
    value_std: np.ndarray  # float32 [n]: std of HSV value (max of R, G, B) per frame: ~0 for black / flat frames
    errors: list[tuple[float, str]] = field(default_factory=list)  # (time of the broken packet, decoder message)
    keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0))  # times of keyframe packets

    @property
    def frames(self) -> int:
        """Frames that actually decode."""
        return int(self.times.size)

    @property
    def duration(self) -> float:
        """Seconds covered by the decoded frames (last frame's time plus one frame)."""
        if self.times.size == 0:
            return 0.0
        step = 1.0 / self.fps if self.fps > 0 else 0.0
        return float(self.times[-1] + step)


def _hsv_scores(rgb: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content scores of a batch of frames [b, h, w, 3] (vs ``prev``, the last HSV frame before them)."""
    import cv2

    b, h, w, _ = rgb.shape
    hsv = cv2.cvtColor(rgb.reshape(b * h, w, 3), cv2.COLOR_RGB2HSV).reshape(b, h, w, 3)
    stack = hsv if prev is None else np.concatenate([prev[None], hsv])
    m = stack.shape[0] - 1
    if m > 0:
        # |a - b| on uint8 in OpenCV, then one integer sum per frame: the mean over H, S and V together
        # equals the mean of the three channel means PySceneDetect averages
        delta = cv2.absdiff(stack[1:].reshape(m * h, w * 3), stack[:-1].reshape(m * h, w * 3))
        scores = (delta.reshape(m, -1).sum(axis=1, dtype=np.uint64) / float(h * w * 3)).astype(np.float32)
    else:
        scores = np.zeros(0, np.float32)
    if prev is None:
        scores = np.concatenate([np.zeros(1, np.float32), scores])
    stds = np.array([cv2.meanStdDev(f[..., 2])[1][0, 0] for f in hsv], np.float32)
    return scores, hsv[-1].copy(), stds


_I420 = frozenset({"yuv420p", "yuvj420p"})


def _small_rgb(frame, k: int) -> np.ndarray | None:
    """RGB of a planar 4:2:0 frame subsampled by ``k`` straight from its planes (no full-size conversion).

    Scaling the whole frame in swscale costs more than decoding it; picking
    every k-th sample of Y and of the chroma planes, then converting the small
    I420 image (BT.601, as OpenCV does), is what keeps the scan cheap.
    """
    import cv2

    w, h = frame.width, frame.height
    y_plane, u_plane, v_plane = frame.planes[:3]
    y = np.frombuffer(y_plane, np.uint8).reshape(-1, y_plane.line_size)[:h:k, :w:k]
    hs, ws = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
    if hs < 2 or ws < 2:
        return None
    u = np.frombuffer(u_plane, np.uint8).reshape(-1, u_plane.line_size)[: (h + 1) // 2 : k, : (w + 1) // 2 : k]
    v = np.frombuffer(v_plane, np.uint8).reshape(-1, v_plane.line_size)[: (h + 1) // 2 : k, : (w + 1) // 2 : k]
    if u.shape[0] < hs // 2 or u.shape[1] < ws // 2:
        return None
    # I420 layout: Y rows, then U and V each as hs/4 rows of ws (two half-width rows per row)
    buf = np.concatenate([y[:hs, :ws].reshape(-1), u[: hs // 2, : ws // 2].reshape(-1), v[: hs // 2, : ws // 2].reshape(-1)])
    return cv2.cvtColor(buf.reshape(hs * 3 // 2, ws), cv2.COLOR_YUV2RGB_I420)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def scan_video(path: VideoSource, *, width: int = SCAN_WIDTH, max_errors: int = 64, label: str | None = None) -> VideoScan:
    """Decode every frame once (see module doc). MediaError when the container cannot be opened at all.

    ``path`` may be the file's bytes (``label`` then names them in errors); a path is read whole, and counted
    as a read (media.counters). The pass itself counts as one ``scan``."""
    src, p = _video_input(path, label)
    av = _av()
    if isinstance(src, str):
        count_event("read", "video")
    count_event("scan", "video")
    times: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    stds: list[np.ndarray] = []
    errors: list[tuple[float, str]] = []
    keys: list[float] = []
    try:
        container = _open_av(src)
    except Exception as exc:
        raise _decoder_error(exc, p) from None
    with container:
        if not container.streams.video:
            raise MediaError("no_video_stream", f"{p}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else 0.0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
        if stream.duration is not None and tb:
            hdur = float(stream.duration * tb)
        elif container.duration is not None:
            hdur = container.duration / 1_000_000.0
        else:
            hdur = 0.0
        hframes = int(stream.frames or 0) or (int(round(hdur * fps)) if hdur > 0 and fps > 0 else 0)
        cc = stream.codec_context
        w0, h0 = int(cc.width or 0), int(cc.height or 0)
        sw = min(width, w0) if w0 else width
        sh = max(2, int(round(h0 * sw / w0)) // 2 * 2) if w0 and h0 else 0
        batch: list[np.ndarray] = []
        bt: list[float] = []
        prev_hsv: np.ndarray | None = None
        count = 0
        rotation = 0

        def flush() -> None:
            nonlocal prev_hsv
            if not batch:
                return
            arr = np.stack(batch)
            s, prev_hsv, value_std = _hsv_scores(arr, prev_hsv)
            scores.append(s)
            stds.append(value_std)
            times.append(np.asarray(bt))
            batch.clear()
            bt.clear()

        step = max(1, int(round(w0 / width))) if w0 else 1

        def take(frame) -> None:
            nonlocal count, rotation
            if count == 0:
                rotation = (-int(round(getattr(frame, "rotation", 0) or 0))) % 360
            if frame.pts is not None and tb:
                t = float(frame.pts) * tb - start
            else:
                t = count / fps if fps > 0 else float(count)
            img = _small_rgb(frame, step) if frame.format.name in _I420 else None
            if img is None:
                img = frame.to_ndarray(format="rgb24", width=sw, height=sh) if sh else frame.to_ndarray(format="rgb24")
            if batch and img.shape != batch[0].shape:  # a resolution change mid-stream: score it at the first size
                img = np.asarray(_resize(img, batch[0].shape[1], batch[0].shape[0]))
            batch.append(img)
            bt.append(t)
            count += 1
            if len(batch) >= _BATCH:
                flush()

        try:
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None and tb:
                    keys.append(float(packet.pts) * tb - start)
                try:
                    for frame in packet.decode():
                        take(frame)
                except av.error.FFmpegError as exc:
                    when = float(packet.pts) * tb - start if (packet.pts is not None and tb) else (count / fps if fps else 0.0)
                    message = getattr(exc, "strerror", None) or str(exc)
                    errors.append((when, f"{type(exc).__name__}: {message[:120]}"))
                    if len(errors) > max_errors:
                        break
        except Exception as exc:  # a demuxer that gives up mid-file: keep what decoded
            errors.append((times[-1][-1] if times else 0.0, f"demux: {type(exc).__name__}"))
        flush()
    t = np.concatenate(times) if times else np.zeros(0)
    s = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    d = np.concatenate(stds) if stds else np.zeros(0, np.float32)
    if t.size > 1 and (np.diff(t) < 0).any():  # decoders emit presentation order; be safe on odd streams
        order = np.argsort(t, kind="stable")
        t, s, d = t[order], s[order], d[order]
    dw, dh = (h0, w0) if rotation in (90, 270) else (w0, h0)
    return VideoScan(fps=fps, width=dw, height=dh, rotation=rotation, header_frames=hframes, header_duration=hdur, times=t, scores=s, value_std=d,
                     errors=errors, keyframes=np.asarray(keys))


def content_cuts(
    scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD, min_scene_frames: int = DEFAULT_MIN_SCENE_FRAMES
) -> np.ndarray:
    """Frame indices where a new scene starts: score >= threshold, at least ``min_scene_frames`` apart.

    The first frame counts as the previous cut, as in PySceneDetect, so no
    scene shorter than ``min_scene_frames`` is created at the start either.
    Only the (few) candidate frames are visited.
    """
    cand = np.flatnonzero(np.asarray(scores) >= threshold)
    cuts: list[int] = []
    last = 0
    for c in cand.tolist():
        if c - last >= min_scene_frames:
            cuts.append(c)
            last = c
    return np.asarray(cuts, dtype=np.int64)


def decodable_frames(path: VideoSource, fps: float, header_frames: int, *, label: str | None = None) -> int:
    """How many frames really decode, for a container whose header may overstate them.

    Seeks to the keyframe before the header's last frame and decodes to the end
    of the stream: the last frame's timestamp gives the count. A stream that
    cannot seek (or has no timestamps) is decoded from the start instead,
    without converting any frame. ``path`` may be the file's bytes.
    """
    src, p = _video_input(path, label)
    av = _av()
    try:
        with _open_av(src) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base) if stream.time_base else 0.0
            start = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
            last = None
            if tb and fps > 0 and header_frames > 1:
                try:
                    container.seek(int((start + (header_frames - 1) / fps) / tb), stream=stream, backward=True)
                    for frame in container.decode(stream):
                        if frame.pts is not None:
                            last = frame.pts
                except av.error.FFmpegError:
                    last = None
            if last is not None:
                return int(round((float(last) * tb - start) * fps)) + 1
    except Exception as exc:
        raise _decoder_error(exc, p) from None
    from media.video import count_decoded_frames

    return count_decoded_frames(src, label=p)


def tail_repeats(frames: np.ndarray) -> bool:
    """Whether the last sampled frames are byte-identical: what clamping past the decodable end looks like."""
    return frames.shape[0] >= 2 and bool(np.array_equal(frames[-1], frames[-2]))


def clip_offset(ref) -> int:
    """Index of a clip's first frame on its video (``round(start_s * fps)``); 0 for a whole video.

    A clip reference's ``frames``/``duration`` describe the clip, so frame
    indices planned from them (SmolVLM's sampling, evenly spaced samples) are
    relative to the clip and shifted by this before decoding.
    """
    start_s, fps = ref.get("start_s"), ref.get("fps")
    if start_s is None or not fps:
        return 0
    return int(round(float(start_s) * float(fps)))


def ref_span(ref, total: int, fps: float) -> tuple[int, int]:
    """(first frame, frame count) a media reference covers: a clip's frames (``start_s``/``end_s``), or all ``total``."""
    total = max(int(total or 0), 0)
    start_s, end_s = ref.get("start_s"), ref.get("end_s")
    if start_s is None or end_s is None or not fps or fps <= 0:
        return 0, total
    first = int(round(float(start_s) * fps))
    count = int(ref.get("frames") or 0) or max(1, int(round((float(end_s) - float(start_s)) * fps)))
    if total:
        first = min(first, total - 1)
        count = max(1, min(count, total - first))
    return first, count


def sample_video(
    src: VideoSource, ref, counts, max_side: int | None = None, *, label: str | None = None
) -> tuple[dict, int, int, np.ndarray, np.ndarray]:
    """Probe and decode the evenly spaced samples of a video or clip reference, within what decodes.

    Returns ``(info, first, count, indices, frames)``: ``info`` is
    :func:`media.probe_video`'s dict (a clip reference that already carries
    its size, rate and rotation is not probed again), ``first``/``count`` the
    span sampled (:func:`ref_span`), ``indices`` the union of the samples for
    every n in ``counts``. When the last samples repeat (the decoder clamped
    indices past the real end, as for a container whose header overstates its
    frames) the true count is measured with :func:`decodable_frames`; ``info``
    then holds the corrected ``frames``/``duration`` and the header's values as
    ``frames_header``/``duration_header``, and the samples are drawn again
    within it. ``src`` is a path or the video's bytes, read once by the caller (``label``: their path);
    the probe, the samples and a corrected count all decode from it.
    """
    from media.video import probe_video, read_video_frames, sample_frame_indices

    clip = ref.get("start_s") is not None and ref.get("end_s") is not None
    if ref.get("fps") and ref.get("width") and ref.get("height") and ref.get("frames"):  # a curated reference
        info = {k: ref.get(k) for k in ("width", "height", "fps", "frames", "duration", "rotation")}
        info["rotation"] = int(info.get("rotation") or 0)
        first, count = clip_offset(ref), int(ref["frames"])
    else:
        info = probe_video(src, label=label)
        first, count = ref_span(ref, info["frames"], info["fps"])

    def draw(first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.unique(np.concatenate([first + sample_frame_indices(count, int(n)) for n in counts] or [np.zeros(0, np.int64)]))
        return idx, read_video_frames(src, idx, max_side=max_side, rotation=info["rotation"], label=label)

    idx, frames = draw(first, count)
    if not clip and tail_repeats(frames) and info["frames"] > 1:
        try:
            true = decodable_frames(src, float(info["fps"] or 0.0), int(info["frames"]), label=label)
        except MediaError:  # the tail does not decode either: keep what the samples gave
            true = int(info["frames"])
        if 0 < true < int(info["frames"]):
            info = {**info, "frames_header": int(info["frames"]), "duration_header": info["duration"], "frames": true,
                    "duration": true / float(info["fps"]) if info["fps"] else info["duration"]}
            first, count = 0, true
            idx, frames = draw(first, count)
    return info, first, count, idx, frames
