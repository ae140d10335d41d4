"""Video operators: probe, decode sampled frames (decodability + motion), then threshold."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curation.filters.common import (
    STAGE_DECODE,
    ThresholdFilter,
    drop_rows,
    media_column,
    put_media,
    set_column,
)
from curation.operators import Operator
from curation.recipe import VideoFilters
import media as M
from media.decoded import DecodeNeeds, SharedDecode, row_positions, with_needs
from media.refs import ref_source

VIDEO_SCORES: dict[str, pa.DataType] = {
    "score_duration_s": pa.float64(),
    "score_fps": pa.float64(),
    "score_min_side": pa.int32(),  # display pixels
    "score_max_side": pa.int32(),
    "score_motion": pa.float64(),  # median over consecutive sampled frames of the mean |grey difference|, 0-255
    "score_static": pa.float64(),  # fraction of consecutive sampled frame pairs that differ by under 1 grey level
    "score_low_info": pa.float64(),  # 1 - min(1, grey std / 32) of the sampled frame with most contrast: 1 = black/flat
}


class VideoAnalyzer(Operator):
    """Probe the container, decode evenly spaced frames (first and last included), score motion."""

    stage = STAGE_DECODE
    columns = VIDEO_SCORES

    def __init__(self, cfg: VideoFilters, shared: SharedDecode | None = None) -> None:
        self.cfg = cfg
        self.shared = with_needs(shared, DecodeNeeds(video_frames=(cfg.sample_frames,), video_side=cfg.analysis_side,
                                                     video_count_frames=cfg.full_decode))

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        media = media_column(table)
        dur = np.full(n, np.nan)
        fps = np.full(n, np.nan)
        smin = np.full(n, -1, np.int64)
        smax = np.full(n, -1, np.int64)
        motion = np.full(n, np.nan)
        static = np.full(n, np.nan)
        low = np.full(n, np.nan)
        metas = table.column("meta").to_pylist() if "meta" in table.column_names else None
        failures: dict[int, tuple[str, str]] = {}
        positions = row_positions(table)
        for i, items in enumerate(media):
            if not items:
                continue
            item = items[0]
            try:
                # the reference names the file in messages; its bytes are the shared decode's one read
                path = (item.get("uri") or "<bytes>").removeprefix("file://")
                got = self.shared.get(positions[i], 0, item).check()
                info = got.video
                # the sampled frames, decoded once for this score and the frame hashes
                frames = got.video_frames(self.cfg.sample_frames, self.cfg.analysis_side)
                if self.cfg.full_decode:  # every frame decoded by the shared decode, from its one read
                    decoded = got.decoded_frames
                    if decoded is None:
                        decoded = M.count_decoded_frames(ref_source(item), label=path)
                    if info["frames"] and decoded < info["frames"]:
                        raise M.MediaError("undecodable", f"{path}: {decoded} of {info['frames']} frames decode")
            except M.MediaError as exc:
                failures[i] = (exc.reason, exc.detail)
                continue
            item.update(width=info["width"], height=info["height"], fps=info["fps"], frames=info["frames"],
                        duration=info["duration"], rotation=info["rotation"], kind="video",
                        format=item.get("format") or str(path).rsplit(".", 1)[-1].lower())
            dur[i], fps[i] = info["duration"], info["fps"]
            smin[i], smax[i] = min(info["width"], info["height"]), max(info["width"], info["height"])
            if "frames_header" in info and metas is not None:  # the header overstated the frames: keep its claim in meta
                metas[i] = _with_header(metas[i], info)
            # elementwise, not a matmul: a BLAS kernel's summation order differs between numpy builds and CPUs
            f = frames.astype(np.float32)
            grey = f[..., 0] * np.float32(0.299) + f[..., 1] * np.float32(0.587) + f[..., 2] * np.float32(0.114)
            del f
            # median over consecutive pairs: encoder warm-up or one scene cut do not make a still video "move"
            steps = np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2), dtype=np.float64) if len(grey) > 1 else np.zeros(0)
            motion[i] = float(np.median(steps)) if steps.size else 0.0
            static[i] = float((steps < 1.0).mean()) if steps.size else 1.0
            low[i] = float(max(0.0, 1.0 - float(grey.reshape(len(grey), -1).std(axis=1).max(initial=0.0)) / 32.0))
        table = put_media(table, media)
        table = set_column(table, "score_duration_s", pa.array(dur, mask=np.isnan(dur)))
        table = set_column(table, "score_fps", pa.array(fps, mask=np.isnan(fps)))
        table = set_column(table, "score_min_side", pa.array(smin, mask=smin < 0).cast(pa.int32()))
        table = set_column(table, "score_max_side", pa.array(smax, mask=smax < 0).cast(pa.int32()))
        table = set_column(table, "score_motion", pa.array(motion, mask=np.isnan(motion)))
        table = set_column(table, "score_static", pa.array(static, mask=np.isnan(static)))
        table = set_column(table, "score_low_info", pa.array(low, mask=np.isnan(low)))
        if metas is not None:
            table = set_column(table, "meta", pa.array(metas, pa.string()))
        return drop_rows(table, failures, self.stage)


class VideoFilter(ThresholdFilter):
    CHECKS = (
        ("score_duration_s", ">=", "min_duration_s"),
        ("score_duration_s", "<=", "max_duration_s"),
        ("score_fps", ">=", "min_fps"),
        ("score_fps", "<=", "max_fps"),
        ("score_min_side", ">=", "min_side"),
        ("score_max_side", "<=", "max_side"),
        ("score_motion", ">=", "min_motion"),
        ("score_static", "<=", "max_static"),
        ("score_low_info", "<=", "max_low_info"),
    )


def _with_header(meta: str | None, info: dict) -> str:
    """The row's meta JSON plus the container header's frame count and duration (when they overstate)."""
    import json

    d = json.loads(meta) if meta else {}
    d.update(frames_header=int(info["frames_header"]), duration_header=float(info["duration_header"] or 0.0))
    return json.dumps(d, ensure_ascii=False, sort_keys=True)
