"""Optional ``clips.transcode``: write each kept clip as its own video file with PyAV.

By default a clip row references its source video (``start_s``/``end_s``); a
training loader then seeks into the long file. Transcoding trades disk for
simpler loaders: the clip's frames are decoded once, turned to display
orientation, scaled to ``max_side`` and encoded with ``codec`` into
``<dir>/<source>/<video>__<start>-<end>.mp4``. The new reference points at
that file (no ``start_s``/``end_s``: the file *is* the clip); the row's meta
keeps the source path and span. Files are written to a temporary name and
renamed, so a resumed job never sees half a clip.
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from curation.clips.config import TranscodeConfig
from media.files import MediaError
from media.video import _av, _av_rgb, _decoder_error, _open_av


def transcode_clip(ref: dict, cfg: TranscodeConfig, out_path: str, data: bytes | None = None) -> dict:
    """Encode ``[ref.start_s, ref.end_s)`` of ``ref.uri`` into ``out_path``; the clip file's media reference.

    ``data``: the source video's bytes when the caller already read them (the clip scan), else its path is opened."""
    av = _av()
    src = ref["uri"]
    start_s, end_s = float(ref["start_s"]), float(ref["end_s"])
    fps = float(ref.get("fps") or 0.0)
    frames: list[np.ndarray] = []
    try:
        with _open_av(src if data is None else data) as container:
            stream = container.streams.video[0]
            tb = float(stream.time_base) if stream.time_base else 0.0
            t0 = float(stream.start_time * tb) if (stream.start_time is not None and tb) else 0.0
            if tb and start_s > 0:
                container.seek(int((t0 + start_s) / tb), stream=stream, backward=True)
            eps = 0.25 / fps if fps else 1e-6
            for frame in container.decode(stream):
                t = float(frame.pts) * tb - t0 if (frame.pts is not None and tb) else 0.0
                if t < start_s - eps:
                    continue
                if t >= end_s - eps:
                    break
                frames.append(_av_rgb(frame, cfg.max_side))
    except MediaError:
        raise
    except Exception as exc:
        raise _decoder_error(exc, src) from None
    if not frames:
        raise MediaError("undecodable", f"{src}: no frame decodes in {start_s:.3f}-{end_s:.3f} s")
    h, w = (d - d % 2 for d in frames[0].shape[:2])
    rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = f"{out_path}.{os.getpid()}.tmp.mp4"
    try:
        with av.open(tmp, mode="w") as out:
            st = out.add_stream(cfg.codec, rate=rate)
            st.width, st.height, st.pix_fmt = w, h, "yuv420p"
            st.bit_rate = cfg.bit_rate
            st.codec_context.thread_count = 1  # same bytes on every run
            for arr in frames:
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[:h, :w]), format="rgb24")
                for packet in st.encode(vf):
                    out.mux(packet)
            for packet in st.encode():
                out.mux(packet)
        os.replace(tmp, out_path)
    except Exception as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise MediaError("unreadable", f"{out_path}: cannot write clip: {type(exc).__name__}: {exc}") from None
    n = len(frames)
    return {"uri": out_path, "kind": "video", "format": "mp4", "width": w, "height": h, "fps": float(rate),
            "frames": n, "duration": n / float(rate), "rotation": 0, "start_s": None, "end_s": None}
