"""Where a video is cut: scene changes or a fixed stride, around broken segments, within min/max lengths.

:func:`plan_clips` works on a :class:`media.scenes.VideoScan` (one decoding
pass) and returns the clips to keep and the spans to account for in the
ledger: clips that are too short, spans broken by a corrupt packet, stride
windows that hold no whole frame. A video whose timestamps jump (a gap no
broken packet explains) cannot be located by seconds and is rejected whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from curation.clips.config import ClipConfig
from media.scenes import VideoScan, content_cuts

STAGE_CLIP = "clip"


@dataclass(frozen=True)
class Clip:
    """A span of decoded frames ``[first, last]`` and its seconds ``[start_s, end_s)`` on the source video."""

    first: int
    last: int
    start_s: float
    end_s: float
    cut: str  # why it starts here: start | scene | stride | split | after_corrupt

    @property
    def frames(self) -> int:
        return self.last - self.first + 1

    @property
    def duration(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Reject:
    """A span that becomes a ledger row: stage, reason and a detail naming the seconds."""

    start_s: float
    end_s: float
    stage: str
    reason: str
    detail: str


def timestamp_jump(scan: VideoScan, max_gap_s: float) -> str | None:
    """A description of the first gap between frame times that no broken packet explains, else None."""
    t = scan.times
    if t.size < 2:
        return None
    step = 1.0 / scan.fps if scan.fps > 0 else 0.0
    gaps = np.diff(t)
    bad = np.flatnonzero((gaps > max_gap_s + step) | (gaps < -step))
    errs = np.asarray([e for e, _ in scan.errors], dtype=np.float64)
    for i in bad.tolist():
        a, b = float(t[i]), float(t[i + 1])
        if errs.size and ((errs >= a - step) & (errs <= b + step)).any():
            continue  # frames lost to a corrupt packet: handled as a broken segment
        return f"frame time jumps from {a:.3f} s to {b:.3f} s after frame {i}"
    return None


def _broken(scan: VideoScan) -> np.ndarray:
    """Boolean [n]: frames inside a span a corrupt packet may have damaged (up to the next keyframe).

    A threaded decoder reports an error a few packets late, so the span starts
    at the last frame missing from the time grid at or before the report.
    """
    t = scan.times
    bad = np.zeros(t.size, dtype=bool)
    keys = np.sort(scan.keyframes)
    step = 1.0 / scan.fps if scan.fps > 0 else 0.0
    missing = t[:-1][np.diff(t) > 1.5 * step] + step if step and t.size > 1 else np.zeros(0)
    for reported, _ in scan.errors:
        earlier = missing[(missing <= reported + 1e-9) & (missing >= reported - 2.0)]
        when = float(earlier[-1]) if earlier.size else reported
        later = keys[keys > when + 1e-9]
        stop = float(later[0]) if later.size else math.inf
        bad |= (t >= when - 1e-9) & (t < stop - 1e-9)
    return bad


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last] index pairs of the True runs of a boolean array."""
    if not mask.any():
        return []
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _end_s(scan: VideoScan, last: int) -> float:
    step = 1.0 / scan.fps if scan.fps > 0 else 0.0
    nxt = float(scan.times[last + 1]) if last + 1 < scan.times.size else float(scan.times[last]) + step
    return min(nxt, float(scan.times[last]) + step) if step else nxt


def plan_clips(scan: VideoScan, cfg: ClipConfig) -> tuple[list[Clip], list[Reject]]:
    """Clips to keep and spans to reject (see module doc). The scan must hold at least one frame."""
    t = scan.times
    broken = _broken(scan)
    clips: list[Clip] = []
    rejects: list[Reject] = []
    for a, b in _runs(broken):
        end = _end_s(scan, b)
        why = [m for w, m in scan.errors if w <= float(t[a]) + 1e-3] or [scan.errors[0][1]]
        rejects.append(Reject(float(t[a]), end, "decode", "corrupt_segment",
                              f"frames {a}-{b} ({t[a]:.3f}-{end:.3f} s) follow a broken packet: {why[-1]}"))
    good_runs = _runs(~broken)
    for k, (a, b) in enumerate(good_runs):
        first_cut = "start" if a == 0 else "after_corrupt"
        if cfg.method == "scenes":
            scores = scan.scores[a : b + 1].copy()
            if scores.size:
                scores[0] = 0.0
            starts = [0] + content_cuts(scores, cfg.threshold, cfg.min_scene_frames).tolist()
            pieces = [(a + s, a + e - 1, first_cut if j == 0 else "scene")
                      for j, (s, e) in enumerate(zip(starts, starts[1:] + [b - a + 1]))]
            for first, last, cut in pieces:
                _emit(scan, cfg, first, last, cut, clips, rejects)
        else:
            t0 = float(t[a])
            t1 = _end_s(scan, b)
            windows = max(1, math.ceil((t1 - t0) / cfg.stride_s - 1e-9))
            for w in range(windows):
                ws, we = t0 + w * cfg.stride_s, min(t1, t0 + (w + 1) * cfg.stride_s)
                inside = np.flatnonzero((t[a : b + 1] >= ws - 1e-9) & (t[a : b + 1] < we - 1e-9))
                cut = first_cut if w == 0 else "stride"
                if inside.size == 0:
                    rejects.append(Reject(ws, we, STAGE_CLIP, "shorter_than_one_frame",
                                          f"clip {ws:.3f}-{we:.3f} s holds no whole frame"))
                    continue
                _emit(scan, cfg, a + int(inside[0]), a + int(inside[-1]), cut, clips, rejects, split=False)
    return clips, rejects


def _emit(scan: VideoScan, cfg: ClipConfig, first: int, last: int, cut: str, clips: list[Clip],
          rejects: list[Reject], split: bool = True) -> None:
    """One scene/window as clips (split evenly when longer than max_s), or a min_clip_s reject."""
    t = scan.times
    start, end = float(t[first]), _end_s(scan, last)
    if end - start < cfg.min_s - 1e-9:
        rejects.append(Reject(start, end, STAGE_CLIP, "min_clip_s",
                              f"clip {start:.3f}-{end:.3f} s lasts {end - start:.3f} s < {cfg.min_s}"))
        return
    parts = 1
    if split and cfg.max_s is not None and end - start > cfg.max_s + 1e-9:
        parts = math.ceil((end - start) / cfg.max_s - 1e-9)
    bounds = np.linspace(start, end, parts + 1)
    for p in range(parts):
        inside = np.flatnonzero((t[first : last + 1] >= bounds[p] - 1e-9) & (t[first : last + 1] < bounds[p + 1] - 1e-9))
        if inside.size == 0:
            continue
        f, l = first + int(inside[0]), first + int(inside[-1])
        clips.append(Clip(f, l, float(t[f]), _end_s(scan, l), cut if p == 0 else "split"))
