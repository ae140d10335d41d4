"""Video under a strategy: SmolVLM's frame sampling, one tile per frame, frame averaging, the prompt.

Sampling follows transformers' ``SmolVLMVideoProcessor.sample_frames``: about
``video_fps`` frames per second, at most ``video_max_frames``, one second skipped
at each end when the video is long enough, evenly spaced unique indices.
Decoding goes through :mod:`media` (decord, PyAV fallback), the one
place that opens media files.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from manifests.errors import UserError
from tokenization import geometry, pixels

if TYPE_CHECKING:  # pragma: no cover
    from tokenization.strategy import Strategy

def sample_frame_indices(
    total_frames: int,
    native_fps: float,
    duration: float | None = None,
    *,
    fps: float = 1.0,
    max_frames: int = 64,
    skip_secs: float = 1.0,
) -> np.ndarray:
    """Indices of the frames SmolVLM keeps (int64, sorted, unique)."""
    if total_frames is None or int(total_frames) < 1:
        raise UserError(f"video has no frames (frames={total_frames})", field="frames")
    if native_fps is None or not native_fps > 0:
        raise UserError(f"video frame rate must be positive, got {native_fps}", field="fps")
    total_frames = int(total_frames)
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = total_frames / native_fps
    desired = max(1, min(int(round(fps * duration)), int(max_frames)))
    start, end = 0, total_frames - 1
    if skip_secs > 0 and (duration - 2 * skip_secs) > (max_frames * fps):
        start = int(skip_secs * native_fps)
        end = int(total_frames - skip_secs * native_fps)
    start = max(0, start)
    end = min(end, total_frames - 1)
    if start >= end:
        start, end = 0, total_frames - 1
    return np.unique(np.linspace(start, end, desired, dtype=int)).astype(np.int64)


def sampled_frame_counts(
    total_frames: np.ndarray,
    native_fps: np.ndarray,
    duration: np.ndarray,
    *,
    fps: float,
    max_frames: int,
    skip_secs: float,
) -> np.ndarray:
    """``len(sample_frame_indices(...))`` for whole columns at once, from metadata only.

    Evenly spaced integer positions with a step >= 1 are all distinct, and with a
    step < 1 they hit every index in range, so the count is min(desired, span).
    Missing duration falls back to frames / fps, missing frames to duration * fps;
    a video with neither counts as one frame.
    """
    total = np.asarray(total_frames, dtype=np.float64)
    nfps = np.asarray(native_fps, dtype=np.float64)
    dur = np.asarray(duration, dtype=np.float64)
    good_fps = np.isfinite(nfps) & (nfps > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dur = np.where(np.isfinite(dur) & (dur > 0), dur, np.where(good_fps, total / nfps, np.nan))
        total = np.where(np.isfinite(total) & (total >= 1), total, np.round(dur * nfps))
    ok = np.isfinite(dur) & (dur > 0) & np.isfinite(total) & (total >= 1) & good_fps
    dur = np.where(ok, dur, 0.0)
    total = np.where(ok, total, 1.0).astype(np.int64)
    nfps = np.where(ok, nfps, 1.0)
    desired = np.clip(np.round(fps * dur).astype(np.int64), 1, int(max_frames))
    skip = (skip_secs > 0) & ((dur - 2 * skip_secs) > (max_frames * fps))
    start = np.where(skip, np.trunc(skip_secs * nfps).astype(np.int64), 0)
    end = np.where(skip, np.trunc(total - skip_secs * nfps).astype(np.int64), total - 1)
    start = np.maximum(start, 0)
    end = np.minimum(end, total - 1)
    bad = start >= end
    start = np.where(bad, 0, start)
    end = np.where(bad, total - 1, end)
    return np.minimum(desired, end - start + 1)


def averaged_count(frames: np.ndarray | int, k: int) -> np.ndarray | int:
    """Frames left after averaging groups of k consecutive frames (the last group may be short)."""
    return -(-np.asarray(frames) // k) if isinstance(frames, np.ndarray) else -(-int(frames) // k)


#: a frame timestamp is MM:SS; from 100 minutes on the minutes take more digits.
LONG_VIDEO_SECS = 6000.0


def timestamp_extra_digits(strategy: "Strategy", total_frames: int, native_fps: float, duration: float) -> int:
    """Digits beyond MM in the kept frames' timestamps (videos of 100 minutes or more).

    Budgets count every timestamp as ``MM:SS``; with digit-by-digit tokenization
    each extra minute digit is one more token, which this adds back.
    """
    idx = sample_frame_indices(
        total_frames, native_fps, duration, fps=strategy.video_fps, max_frames=strategy.video_max_frames,
        skip_secs=strategy.video_skip_secs,
    )[:: strategy.frame_averaging]
    minutes = (idx / native_fps // 60).astype(np.int64)
    return int(np.maximum(np.floor(np.log10(np.maximum(minutes, 1))).astype(np.int64) + 1 - 2, 0).sum())


@dataclass(frozen=True)
class VideoPlan:
    """What a video becomes under a strategy, from its metadata alone."""

    total_frames: int
    native_fps: float
    duration: float
    indices: tuple[int, ...]  # decoded frame indices
    timestamps: tuple[float, ...]  # seconds of each kept (averaged) frame: the first of its group
    frames: int  # frames fed to the encoder after averaging, one tile each
    image_seq_len: int
    image_tokens: int
    prompt: str
    seq_len: int  # prompt length (estimate without a tokenizer)

    def to_dict(self, prompt: bool = True) -> dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["indices"], d["timestamps"] = list(self.indices), list(self.timestamps)
        if not prompt:
            d.pop("prompt")
        return d


def plan_video(strategy: "Strategy", total_frames: int, native_fps: float, duration: float | None = None) -> VideoPlan:
    from tokenization.counting import estimate_counter

    idx = strategy.sample_frames(total_frames, native_fps, duration)
    if duration is None or not math.isfinite(duration) or duration <= 0:
        duration = int(total_frames) / native_fps
    k = strategy.frame_averaging
    kept = idx[::k]
    timestamps = tuple(float(i) / native_fps for i in kept)
    prompt = strategy.video_prompt(timestamps, duration)
    return VideoPlan(
        total_frames=int(total_frames),
        native_fps=float(native_fps),
        duration=float(duration),
        indices=tuple(int(i) for i in idx),
        timestamps=timestamps,
        frames=len(kept),
        image_seq_len=strategy.image_seq_len,
        image_tokens=len(kept) * strategy.image_seq_len,
        prompt=prompt,
        seq_len=estimate_counter(strategy).count(prompt),
    )


@dataclass(frozen=True)
class VideoFrames:
    """Decoded and tiled frames of one video, with the plan that chose them."""

    tiles: np.ndarray  # [frames, 3, tile, tile] float32 normalized (uint8 when normalize=False)
    plan: VideoPlan


def frames_to_tiles(strategy: "Strategy", frames: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Each [H, W, 3] uint8 frame resized to one tile (longest edge first, then tile x tile), then averaged."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise UserError(f"expected [n, H, W, 3] frames, got shape {frames.shape}", field="frames")
    t = strategy.tile
    h, w = frames.shape[1:3]
    rw, rh = (int(v[0]) for v in geometry.resize_longest_edge(np.array([w]), np.array([h]), strategy.video_longest_edge))
    norm = strategy._normalizer if normalize else None
    out = np.empty((frames.shape[0], 3, t, t), dtype=np.float32 if normalize else np.uint8)
    for i, frame in enumerate(frames):
        im = pixels.resize(Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)), rw, rh)
        pixels.encode_single(pixels.resize(im, t, t), out[i], norm)
    k = strategy.frame_averaging
    if k == 1:
        return out
    n = out.shape[0]
    groups = [out[s : s + k].astype(np.float32).mean(axis=0) for s in range(0, n, k)]
    stacked = np.stack(groups)
    return stacked if normalize else np.clip(np.rint(stacked), 0, 255).astype(np.uint8)


def load_video(
    strategy: "Strategy",
    path: str | os.PathLike,
    *,
    normalize: bool = True,
    start_s: float | None = None,
    end_s: float | None = None,
) -> VideoFrames:
    """Probe, sample, decode (decord, PyAV fallback) and tile one video file, or the clip ``[start_s, end_s)`` of it.

    SmolVLM's sampling runs within the clip (its duration and frames), and the
    plan's indices and timestamps are relative to the clip's start, as a model
    trained on the clip sees them. A container whose header overstates its
    frames is planned on the frames that decode (``media.scenes.decodable_frames``).
    """
    from media import MediaError, probe_video, read_video_frames
    from media.scenes import decodable_frames, tail_repeats

    field = os.fspath(path)
    try:
        meta = probe_video(path)
    except MediaError as exc:
        raise UserError(f"cannot read video: {exc}", field=field) from None
    if not meta.get("frames") or not meta.get("fps"):
        raise UserError("video has no decodable frames (no frame count or frame rate)", field=field)
    fps = float(meta["fps"])
    total, duration, first = int(meta["frames"]), meta.get("duration") or None, 0
    if (start_s is None) != (end_s is None):
        raise UserError("give both start_s and end_s for a clip", field="start_s")
    if start_s is not None:
        if not 0 <= float(start_s) < float(end_s):
            raise UserError(f"clip [{start_s}, {end_s}) is empty or negative", field="start_s")
        first = int(round(float(start_s) * fps))
        count = int(round(float(end_s) * fps)) - first
        if first >= total or count < 1:
            raise UserError(f"clip [{start_s}, {end_s}) s holds no frame of a {total}-frame video", field="start_s")
        total, duration = min(count, total - first), float(end_s) - float(start_s)

    def decode(total: int, duration: float | None) -> tuple[VideoPlan, np.ndarray]:
        plan = plan_video(strategy, total, fps, duration)
        try:
            frames = read_video_frames(path, first + np.asarray(plan.indices), rotation=meta.get("rotation"))
        except MediaError as exc:
            raise UserError(f"video has no decodable frames: {exc}", field=field) from None
        return plan, frames

    plan, frames = decode(total, duration)
    if start_s is None and tail_repeats(frames):  # clamped past the real end: the header overstates the frames
        try:
            true = decodable_frames(path, fps, total)
        except MediaError:
            true = total
        if 0 < true < total:
            plan, frames = decode(true, true / fps)
    if frames.shape[0] == 0:
        raise UserError("video has no decodable frames", field=field)
    return VideoFrames(frames_to_tiles(strategy, frames, normalize=normalize), plan)
