"""Reader-level expansion: each video row of a chunk becomes its clip rows (and ledger rows for rejected spans).

Runs in the worker right after the chunk is read, before any operator, so
``read = kept + dropped`` holds per clip row. A video that cannot be scanned
at all stays one row, dropped at stage ``decode`` with the decoder's reason;
a video whose timestamps jump stays one row, dropped (``timestamp_jump``).
Ids derive from the video's key plus the clip's seconds (``rel#t=1.200,3.040``),
so they do not depend on chunking or on the engine.

Each video file is read from disk once: the scan decodes the bytes it read,
and those bytes are held (media.decoded.hold_clip_video) for the shared decode
of its clips, which runs next in the same worker (a chunk is read and goes
through its first stage, where the decode is, in one worker on both engines),
so the clips' byte hash, probe-free sampling and frame hashes read no file.
Nothing travels between workers: a chunk record carries rows, not bytes. A
file over media.decoded.VIDEO_IN_MEMORY_MAX is streamed by the scan and read
again by its clips' decoders (counted; docs/media.md).
"""
from __future__ import annotations

import json
import os

import pyarrow as pa

from curation.clips.config import ClipConfig
from curation.clips.plan import Clip, Reject, plan_clips, timestamp_jump
from curation.operators import DROP_DETAIL, DROP_REASON, DROP_STAGE, ensure_decision_columns
import media as M
from media.decoded import hold_clip_video, read_clip_video, release_clip_videos
from media.scenes import scan_video
from manifests.schema import make_id

#: private reader columns (curation.readers): ordinal, key and ledger uri of an input
_POS, _KEY, _URI = "_pos", "_key", "_uri"
#: every row of a clip source gets ``_pos = input ordinal * CLIP_POS_SCALE + clip number``: unique per row (the
#: engine's id fix-ups and the shared decode key rows by it) and still in input order
CLIP_POS_SCALE = 1 << 20


def clip_key(key: str, start_s: float, end_s: float) -> str:
    """The sample key of a clip: its video's key with a media-fragment time range."""
    return f"{key}#t={start_s:.3f},{end_s:.3f}"


def expand_clips(table: pa.Table, cfg: ClipConfig, transcode_dir: str | None = None) -> pa.Table:
    """The chunk with every undropped video row replaced by its clip rows (see module doc)."""
    table = ensure_decision_columns(table)
    release_clip_videos()  # bytes an earlier chunk held and never decoded are stale
    if table.num_rows == 0:
        return table
    out: list[dict] = []
    for row in table.to_pylist():
        if row[DROP_REASON] is not None or not row["media"]:
            out.append({**row, _POS: row[_POS] * CLIP_POS_SCALE})
            continue
        rows = _video_rows(row, cfg, transcode_dir)
        out.extend({**r, _POS: row[_POS] * CLIP_POS_SCALE + j} for j, r in enumerate(rows))
    return pa.Table.from_pylist(out, schema=table.schema)


def _dropped(row: dict, stage: str, reason: str, detail: str) -> dict:
    return {**row, DROP_STAGE: stage, DROP_REASON: reason, DROP_DETAIL: detail}


def _video_rows(row: dict, cfg: ClipConfig, transcode_dir: str | None) -> list[dict]:
    ref = row["media"][0]
    path = ref.get("uri")
    local = _local_path(ref)
    data, file_key = None, None
    try:
        if local is not None:  # read once: the scan, the transcode and the clips' decode use these bytes
            data, file_key = read_clip_video(local)
        scan = scan_video(path if data is None else data, width=cfg.scan_width, label=path)
    except M.MediaError as exc:
        return [_dropped(row, "decode", exc.reason, exc.detail)]
    if scan.frames == 0:
        first = f": {scan.errors[0][1]}" if scan.errors else ""
        return [_dropped(row, "decode", "undecodable", f"{path}: no frame decodes{first}")]
    jump = timestamp_jump(scan, cfg.max_timestamp_gap_s)
    if jump is not None:
        return [_dropped(row, "decode", "timestamp_jump", f"{path}: {jump}")]
    clips, rejects = plan_clips(scan, cfg)
    meta = json.loads(row["meta"]) if row["meta"] else {}
    video_meta = {"frames_decodable": scan.frames, "header_frames": scan.header_frames,
                  "source_duration": round(scan.duration, 6)}
    spans: list[tuple[float, int, Clip | Reject]] = [(c.start_s, 0, c) for c in clips] + \
        [(r.start_s, 1, r) for r in rejects]
    spans.sort(key=lambda s: (s[0], s[1]))
    total = len(clips)
    rows: list[dict] = []
    k = 0
    for _, _, span in spans:
        key = clip_key(row[_KEY], span.start_s, span.end_s)
        media = {**ref, "kind": "video", "fps": scan.fps, "width": scan.width, "height": scan.height,
                 "rotation": scan.rotation, "start_s": span.start_s, "end_s": span.end_s,
                 "duration": span.end_s - span.start_s}
        m = {**meta, **video_meta, "start_s": round(span.start_s, 6), "end_s": round(span.end_s, 6)}
        if isinstance(span, Clip):
            media["frames"] = span.frames
            m.update(clip=k, clips=total, cut=span.cut, first_frame=span.first, last_frame=span.last)
            k += 1
        else:
            media["frames"] = 0
        new = {**row, "id": make_id(row["source"], key), _KEY: key, _URI: f"{row[_URI]}#t={span.start_s:.3f},{span.end_s:.3f}",
               "meta": json.dumps(m, ensure_ascii=False, sort_keys=True), "media": [media]}
        if isinstance(span, Reject):
            new = _dropped(new, span.stage, span.reason, f"{path}: {span.detail}")
        elif transcode_dir is not None:
            from curation.clips.transcode import transcode_clip

            try:
                new["media"] = [transcode_clip(media, cfg.transcode, _clip_path(transcode_dir, row, span), data)]
                new["meta"] = json.dumps({**m, "source_uri": path}, ensure_ascii=False, sort_keys=True)
            except M.MediaError as exc:
                new = _dropped(new, "transcode", exc.reason, exc.detail)
        rows.append(new)
    if file_key is not None and transcode_dir is None:  # transcoded clips decode their own files
        hold_clip_video(file_key, data, len(clips))
    return rows


def _local_path(ref: dict) -> str | None:
    """The local file a video reference decodes from (as media.refs.ref_source resolves it), else None."""
    from manifests.storage import is_uri
    from media.containers import container_scheme

    uri = ref.get("uri")
    if ref.get("bytes") is not None or uri is None or container_scheme(uri) is not None or is_uri(uri):
        return None
    return uri.removeprefix("file://")


def _clip_path(folder: str, row: dict, clip: Clip) -> str:
    stem = os.path.splitext(row[_KEY])[0].replace(os.sep, "__")
    return os.path.join(folder, row["source"], f"{stem}__{clip.start_s:09.3f}-{clip.end_s:09.3f}.mp4")


def expand_source_clips(recipe, src, table: pa.Table) -> pa.Table:
    """:func:`expand_clips` with the source's ``clips:`` settings (transcode folder resolved against the recipe)."""
    cfg: ClipConfig = src.clips
    folder = recipe.resolve(cfg.transcode.dir) if cfg.transcode is not None else None
    return expand_clips(table, cfg, folder)
