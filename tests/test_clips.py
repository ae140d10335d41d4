"""Clips: scene cuts, stride cuts, broken segments, timestamp jumps, lying headers, and a clip manifest downstream."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.clips.config import ClipConfig
from curation.clips.expand import CLIP_POS_SCALE, expand_clips
from curation.clips.plan import plan_clips, timestamp_jump
from curation.engine import run_job
from curation.recipe import parse_recipe
from curation.synth import moving_frames, photo_like, write_video
from manifests.errors import RecipeError
import media as M
from media.scenes import VideoScan, content_cuts, decodable_frames, sample_video, scan_video

FPS = 10


def _segment(seed: int, n: int, size=(160, 120)) -> np.ndarray:
    """A panning shot of one photo-like scene: consecutive frames differ a little, scenes a lot."""
    w, h = size
    scene = np.asarray(photo_like(seed, (w * 2, h)), dtype=np.uint8)
    return np.stack([scene[:, i * 2 : i * 2 + w] for i in range(n)])


def concat_video(path: Path, seeds=(1, 2, 3), seconds=(2.0, 3.0, 2.5), fps: int = FPS, codec: str = "libx264") -> list[float]:
    """A video made of distinct shots; returns the true boundaries in seconds."""
    parts = [_segment(s, int(round(d * fps))) for s, d in zip(seeds, seconds)]
    write_video(path, np.concatenate(parts), fps=fps, codec=codec)
    return list(np.cumsum(seconds)[:-1])


def lying_avi(path: Path, claimed: int = 444, real: int = 68) -> Path:
    """An AVI whose header claims ``claimed`` frames while only the first ``real`` are in the file.

    Written whole, then cut after the ``real``-th frame chunk of its movi list
    (the index and the rest are gone, the header is untouched).
    """
    full = path.with_name(path.stem + "_full.avi")
    write_video(full, moving_frames(claimed, (160, 120)), fps=15, codec="mpeg4")
    data = full.read_bytes()
    movi = data.index(b"movi")
    offs, j = [], movi
    while len(offs) <= real:
        j = data.index(b"00dc", j + 1)
        offs.append(j)
    path.write_bytes(data[: offs[real]])
    full.unlink()
    return path


def break_packet(path: Path, at_s: float) -> None:
    """Overwrite the payload of the video packet at ``at_s`` with garbage (the container stays intact)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        tb = float(s.time_base)
        pkt = next(p for p in c.demux(s) if p.pts is not None and p.pts * tb >= at_s - 1e-6 and p.size > 16)
        pos, size = pkt.pos, pkt.size
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    data[pos + 4 : pos + size] = rng.integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def jumping_video(path: Path, jump_after: int = 20, jump_s: float = 30.0) -> None:
    """Frames whose timestamps jump forward by ``jump_s`` after ``jump_after`` frames."""
    frames = moving_frames(40, (96, 64))
    with av.open(str(path), mode="w") as c:
        st = c.add_stream("mpeg4", rate=FPS)
        st.width, st.height, st.pix_fmt = 96, 64, "yuv420p"
        from fractions import Fraction

        st.codec_context.time_base = Fraction(1, FPS)
        for i, arr in enumerate(frames):
            f = av.VideoFrame.from_ndarray(arr, format="rgb24")
            f.pts = i if i < jump_after else i + int(jump_s * FPS)
            f.time_base = Fraction(1, FPS)
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def _base_row(path: Path, pos: int = 0) -> dict:
    return {"id": "x", "source": "v", "modality": "video", "media": [{"uri": str(path), "kind": "video", "format": path.suffix[1:]}],
            "text": None, "turns": None, "meta": json.dumps({"path": path.name}), "_pos": pos, "_key": path.name,
            "_uri": str(path), "_drop_reason": None, "_drop_stage": None, "_drop_detail": None}


def _table(rows: list[dict]) -> pa.Table:
    from curation.readers import BASE_SCHEMA

    schema = BASE_SCHEMA
    for name in ("_drop_reason", "_drop_stage", "_drop_detail"):
        schema = schema.append(pa.field(name, pa.string()))
    return pa.Table.from_pylist(rows, schema=schema)


# --------------------------------------------------------------------------- scene detection


def test_scene_cuts_on_concatenated_shots_are_within_a_second(tmp_path):
    truth = concat_video(tmp_path / "shots.mp4")
    scan = scan_video(tmp_path / "shots.mp4")
    assert scan.frames == 75 and scan.errors == []
    cuts = scan.times[content_cuts(scan.scores)]
    assert len(cuts) == len(truth)
    assert np.abs(cuts - np.asarray(truth)).max() <= 1.0


def test_scene_cuts_match_pyscenedetect(tmp_path):
    scenedetect = pytest.importorskip("scenedetect")
    concat_video(tmp_path / "shots.mp4", seconds=(2.0, 2.0, 2.0, 2.0), seeds=(4, 5, 6, 7))
    video = scenedetect.open_video(str(tmp_path / "shots.mp4"))
    sm = scenedetect.SceneManager()
    sm.add_detector(scenedetect.ContentDetector())
    sm.detect_scenes(video)
    theirs = [s[0].frame_num for s in sm.get_scene_list()[1:]]
    ours = content_cuts(scan_video(tmp_path / "shots.mp4").scores).tolist()
    assert ours == theirs


def test_min_scene_frames_suppresses_cuts_close_together():
    scores = np.zeros(100, np.float32)
    scores[[10, 15, 40, 41, 90]] = 50.0
    assert content_cuts(scores, 27.0, 15).tolist() == [15, 40, 90]
    assert content_cuts(scores, 27.0, 1).tolist() == [10, 15, 40, 41, 90]


# --------------------------------------------------------------------------- planning


def _scan(times, fps=FPS, errors=(), keys=None, scores=None) -> VideoScan:
    t = np.asarray(times, np.float64)
    return VideoScan(fps=fps, width=64, height=48, rotation=0, header_frames=t.size, header_duration=float(t[-1]),
                     times=t, scores=np.zeros(t.size, np.float32) if scores is None else np.asarray(scores, np.float32),
                     value_std=np.ones(t.size, np.float32), errors=list(errors),
                     keyframes=np.asarray(keys if keys is not None else [0.0]))


def test_stride_clips_respect_min_and_max_lengths():
    scan = _scan(np.arange(95) / FPS)  # 9.5 s
    clips, rejects = plan_clips(scan, ClipConfig(method="stride", stride_s=2.0, min_s=1.0))
    assert [(c.start_s, round(c.end_s, 3)) for c in clips] == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 9.5)]
    clips, rejects = plan_clips(scan, ClipConfig(method="stride", stride_s=3.0, min_s=1.0))
    assert [round(c.duration, 3) for c in clips] == [3.0, 3.0, 3.0]
    assert [(r.reason, round(r.start_s, 3)) for r in rejects] == [("min_clip_s", 9.0)]
    # scenes longer than max_s are split evenly
    clips, _ = plan_clips(scan, ClipConfig(method="scenes", max_s=4.0, min_s=0.5))
    assert len(clips) == 3 and all(c.duration <= 4.0 + 1e-9 for c in clips)
    assert [c.cut for c in clips] == ["start", "split", "split"]


def test_a_clip_shorter_than_one_frame_goes_to_the_ledger():
    scan = _scan(np.arange(6) * 0.5, fps=2.0)  # a frame every 0.5 s
    clips, rejects = plan_clips(scan, ClipConfig(method="stride", stride_s=0.2, min_s=0.0))
    assert len(clips) == 6
    assert {r.reason for r in rejects} == {"shorter_than_one_frame"}
    assert all("holds no whole frame" in r.detail for r in rejects)


def test_corrupt_segment_keeps_the_clips_around_it(tmp_path):
    path = tmp_path / "broken.mp4"
    frames = np.concatenate([_segment(1, 30), _segment(2, 30), _segment(3, 30)])
    with av.open(str(path), mode="w") as c:  # keyframes every 10 frames, so the damage ends at the next one
        st = c.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        st.options = {"preset": "ultrafast", "g": "10", "keyint_min": "10", "sc_threshold": "0"}
        for arr in frames:
            for p in st.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    break_packet(path, 4.5)
    scan = scan_video(path)
    assert scan.errors, "the broken packet is reported"
    clips, rejects = plan_clips(scan, ClipConfig(method="scenes", min_s=0.5))
    bad = [r for r in rejects if r.reason == "corrupt_segment"]
    assert len(bad) == 1 and 4.0 <= bad[0].start_s <= 4.6 + 1e-6 and bad[0].end_s <= 5.0 + 1e-6
    assert any(c.end_s <= bad[0].start_s + 1e-6 for c in clips), "a clip before the damage is kept"
    assert any(c.start_s >= bad[0].end_s - 1e-6 for c in clips), "a clip after the damage is kept"
    assert not any(c.start_s < bad[0].end_s and c.end_s > bad[0].start_s for c in clips)
    # through the reader-level expansion: kept clips plus one ledger row for the broken span
    out = _rows(expand_clips(_table([_base_row(path)]), ClipConfig(method="scenes", min_s=0.5)))
    reasons = [r["_drop_reason"] for r in out]
    assert reasons.count("corrupt_segment") == 1 and reasons.count(None) >= 2


def test_timestamp_jump_is_ledgered(tmp_path):
    path = tmp_path / "jump.avi"
    jumping_video(path.with_suffix(".mkv"))
    scan = scan_video(path.with_suffix(".mkv"))
    assert timestamp_jump(scan, 1.0) is not None
    out = _rows(expand_clips(_table([_base_row(path.with_suffix(".mkv"))]), ClipConfig()))
    assert len(out) == 1 and out[0]["_drop_reason"] == "timestamp_jump"
    assert "jumps" in out[0]["_drop_detail"]


def test_expansion_keys_positions_and_unreadable_videos(tmp_path):
    concat_video(tmp_path / "a.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00junk" * 100)
    rows = [_base_row(tmp_path / "a.mp4", 0), _base_row(tmp_path / "junk.mp4", 1)]
    out = _rows(expand_clips(_table(rows), ClipConfig(min_s=0.5)))
    kept = [r for r in out if r["_drop_reason"] is None]
    assert len(kept) == 3
    assert [r["_key"] for r in kept][0] == "a.mp4#t=0.000,2.000"
    assert [r["_pos"] for r in out] == [0, 1, 2, CLIP_POS_SCALE]
    assert len({r["id"] for r in out}) == len(out)
    assert out[-1]["_drop_stage"] == "decode" and out[-1]["_drop_reason"] == "undecodable"
    m = kept[1]["media"][0]
    assert (m["start_s"], m["end_s"], m["frames"]) == (2.0, 5.0, 30)


# --------------------------------------------------------------------------- headers that lie


def test_header_that_overstates_frames(tmp_path):
    path = lying_avi(tmp_path / "lie.avi")
    assert M.probe_video(path)["frames"] == 444  # what the header claims
    assert decodable_frames(path, 15.0, 444) == 68 == M.count_decoded_frames(path)
    info, first, count, idx, frames = sample_video(str(path), {"uri": str(path)}, (8,), 128)
    assert info["frames"] == 68 and info["frames_header"] == 444 and (first, count) == (0, 68)
    assert idx.max() == 67 and len(np.unique(frames.reshape(len(frames), -1), axis=0)) == len(frames)


def test_lying_header_through_curation_records_true_count_and_motion(tmp_path):
    path = lying_avi(tmp_path / "lie.avi")
    recipe = parse_recipe({"sources": [{"name": "v", "kind": "video", "path": str(path)}],
                           "filters": {"video": {"min_motion": 1.0}}})
    run_job(recipe, tmp_path / "m", engine="local")
    rows = pq.read_table(next((tmp_path / "m").rglob("part-*.parquet"))).to_pylist()
    assert len(rows) == 1
    row = rows[0]
    assert row["media"][0]["frames"] == 68
    assert json.loads(row["meta"])["frames_header"] == 444
    # the motion score is the one of 8 samples spread over the 68 frames that decode
    frames = M.read_video_frames(path, M.sample_frame_indices(68, 8), max_side=128)
    grey = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    expect = float(np.median(np.abs(np.diff(grey, axis=0)).mean(axis=(1, 2))))
    assert row["score_motion"] == pytest.approx(expect, rel=1e-4) and expect > 1.0


# --------------------------------------------------------------------------- a clip manifest downstream


@pytest.fixture
def clip_manifest(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    concat_video(vids / "a.mp4", seeds=(1, 2, 3))
    concat_video(vids / "b.mp4", seeds=(9, 2, 8), seconds=(2.0, 3.0, 2.0))  # shares shot 2 with a.mp4
    write_video(vids / "still.mp4", moving_frames(30, (160, 120), static=True), fps=FPS)
    recipe = parse_recipe({
        "sources": [{"name": "clips", "kind": "video", "path": str(vids), "clips": {"method": "scenes", "min_s": 0.5}}],
        "filters": {"video": {"max_static": 0.5}},
        "dedup": {"exact": True, "image": {"enabled": False}, "text": {"enabled": False}, "video": {"enabled": True}},
        "tokens": {"strategy": "smolvlm-256m"},
    })
    run_job(recipe, tmp_path / "m", engine="local")
    return tmp_path / "m"


def test_clip_manifest_rows_ledger_and_cross_video_frame_hash_dedup(clip_manifest):
    from manifests.reader import open_manifest

    m = open_manifest(clip_manifest)
    rows = m.table().to_pylist()
    ledger = m.ledger().to_pylist()
    reasons = sorted(r["reason"] for r in ledger)
    assert "max_static" in reasons  # the still video
    assert "duplicate" in reasons  # shot 2 appears in both videos: one copy stays
    info = json.loads((clip_manifest / "manifest.json").read_text())["sources"]["clips"]
    assert info["read"] == info["kept"] + info["dropped"] == len(rows) + len(ledger)
    assert len(rows) == 5
    for r in rows:
        ref = r["media"][0]
        assert ref["start_s"] is not None and ref["end_s"] > ref["start_s"]
        assert ref["frames"] == round((ref["end_s"] - ref["start_s"]) * FPS)
        assert r["tokens"] > 0


def test_clip_manifest_through_tokens_torch_reader_and_mix(clip_manifest, tmp_path, capsys):
    from manifests.cli import main
    from manifests.reader import open_manifest

    m = open_manifest(clip_manifest)
    rows = m.table().to_pylist()
    # tokens: a clip costs what SmolVLM's sampling within the clip costs
    from tokenization.strategy import get_strategy

    s = get_strategy("smolvlm-256m")
    for r in rows:
        ref = r["media"][0]
        plan = s.plan_video(ref["frames"], ref["fps"], ref["duration"])
        assert plan.frames == len(s.sample_frames(ref["frames"], ref["fps"], ref["duration"]))
        video = s.load_video(ref["uri"], start_s=ref["start_s"], end_s=ref["end_s"], normalize=False)
        assert video.plan.total_frames == ref["frames"] and video.tiles.shape[0] == plan.frames
    assert main(["tokens", "--manifest", str(clip_manifest), "--json"]) == 0
    total = json.loads(capsys.readouterr().out)
    assert total["rows"] == len(rows)
    assert total["totals"]["tokens"] == sum(r["tokens"] for r in rows)  # the same counts as curation recorded
    # torch reader: the frames of a clip come from inside the clip
    got = {r["id"]: r for r in m.to_torch(video_frames=4, decode="pil")}
    for r in rows:
        ref = r["media"][0]
        first = int(round(ref["start_s"] * ref["fps"]))
        expect = M.read_video_frames(ref["uri"], first + M.sample_frame_indices(ref["frames"], 4))
        assert np.array_equal(np.asarray(got[r["id"]]["frames"]), expect)
    # mix: clips mix like any other rows
    out = tmp_path / "mix"
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(f"seed: 0\nby: tokens\nstrategy: smolvlm-256m\ntotal: 2000\nmax_epochs: 4\ninputs: [{clip_manifest}]\n"
                   "weights: {clips: 1.0}\n")
    assert main(["mix", str(cfg), "--out", str(out)]) == 0
    mixed = open_manifest(out).table().to_pylist()
    assert {r["id"] for r in mixed} <= {r["id"] for r in rows} and mixed


def test_recipe_rejects_clips_on_other_kinds(tmp_path):
    (tmp_path / "a.txt").write_text("hello there")
    with pytest.raises(RecipeError, match="clips"):
        parse_recipe({"sources": [{"name": "t", "kind": "text", "path": str(tmp_path / "a.txt"), "clips": {}}]})
    with pytest.raises(RecipeError, match="max_s"):
        parse_recipe({"sources": [{"name": "v", "kind": "video", "path": str(tmp_path), "clips": {"min_s": 5, "max_s": 2}}]})


def test_transcode_writes_each_clip_as_a_file(tmp_path):
    concat_video(tmp_path / "a.mp4")
    cfg = ClipConfig(min_s=0.5, transcode={"dir": str(tmp_path / "out"), "codec": "mpeg4", "max_side": 96})
    out = [r for r in _rows(expand_clips(_table([_base_row(tmp_path / "a.mp4")]), cfg, str(tmp_path / "out")))]
    assert len(out) == 3 and all(r["_drop_reason"] is None for r in out)
    for r, frames in zip(out, (20, 30, 25)):
        ref = r["media"][0]
        assert ref["start_s"] is None and Path(ref["uri"]).is_file() and ref["uri"].startswith(str(tmp_path / "out"))
        assert ref["frames"] == frames == M.count_decoded_frames(ref["uri"])
        assert max(ref["width"], ref["height"]) <= 96
        assert json.loads(r["meta"])["source_uri"] == str(tmp_path / "a.mp4")
    # the same clip encodes to the same bytes (resume and reruns are reproducible)
    again = _rows(expand_clips(_table([_base_row(tmp_path / "a.mp4")]), cfg, str(tmp_path / "out2")))
    assert Path(again[0]["media"][0]["uri"]).read_bytes() == Path(out[0]["media"][0]["uri"]).read_bytes()


def test_notebook_card_shows_the_clip_span_and_frames_inside_it(clip_manifest, monkeypatch):
    from manifests.cards import card_html
    from manifests.reader import open_manifest
    from manifests.thumbs import STRIP_ITEMS, strip_uris

    monkeypatch.setenv("SMOLCURATE_THUMB_CACHE", "")
    rows = open_manifest(clip_manifest).table().to_pylist()
    row = next(r for r in rows if r["media"][0]["start_s"] == 2.0)
    html = card_html(row)
    assert "clip 2.00\u20135.00 s" in html and "30 frames" in html
    assert len(strip_uris(row["media"])) == STRIP_ITEMS
    # the strip's frames are the clip's: first and last frame of the clip, not of the video
    ref = row["media"][0]
    from media.refs import decode_video_ref

    frames = decode_video_ref(ref, STRIP_ITEMS)
    whole = M.read_video_frames(ref["uri"], [20, 49])
    assert np.array_equal(frames[0], whole[0]) and np.array_equal(frames[-1], whole[1])


@pytest.mark.ray
def test_clips_and_ocr_are_identical_on_both_engines(tmp_path, ray_session):
    """Clip expansion in the reader and OCR in its own stage give byte-identical manifests, local and Ray."""
    from curation.synth import text_page, write_image_pdf

    vids = tmp_path / "videos"
    vids.mkdir()
    concat_video(vids / "a.mp4")
    concat_video(vids / "b.mp4", seeds=(5, 6, 7), seconds=(1.5, 2.0, 2.0))
    (vids / "junk.mp4").write_bytes(b"\x00junk" * 50)
    docs = tmp_path / "docs"
    docs.mkdir()
    write_image_pdf(docs / "scan.pdf", [text_page("Two engines read the same words.", size=(420, 120), font_size=24,
                                                  margin=20)])
    recipe = parse_recipe({
        "sources": [{"name": "clips", "kind": "video", "path": str(vids), "chunk_size": 2, "clips": {"min_s": 0.5}},
                    {"name": "docs", "kind": "document", "path": str(docs)}],
        "document": {"ocr": "auto"},
        "dedup": {"exact": True},
    })
    run_job(recipe, tmp_path / "local", engine="local", quiet=True)
    run_job(recipe, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("local", "ray"))
    assert a["sources"] == b["sources"] and a["sources"]["clips"]["kept"] == 6
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_collator_reads_a_clip_from_inside_it(tmp_path):
    """The training collator (and so the ablations) plans SmolVLM's sampling on the clip and reads file indices."""
    import tokenization
    from tokenization.base_tokenizer import train_bpe
    from tokenization.collate import SmolVLMCollator

    concat_video(tmp_path / "a.mp4")
    s = tokenization.get_strategy("smolvlm-256m")
    asked: list[np.ndarray] = []

    def reader(ref, indices):
        asked.append(np.asarray(indices))
        return M.read_video_frames(ref["uri"], indices)

    words = ["the", "clip", "shows", "a", "scene", "of", "photos", "panning", "left"] * 30
    col = SmolVLMCollator(s, train_bpe([" ".join(words)], vocab_size=300), video_reader=reader)
    ref = {"uri": str(tmp_path / "a.mp4"), "kind": "video", "frames": 30, "fps": 10.0, "duration": 3.0,
           "start_s": 2.0, "end_s": 5.0}
    row = {"id": "c", "images": [], "media": [ref],
           "turns": [{"role": "user", "content": "What happens?"}, {"role": "assistant", "content": "a scene"}]}
    batch = col([row])
    plan = s.plan_video(30, 10.0, 3.0)
    assert asked[0].tolist() == [20 + i for i in plan.indices]  # within frames 20-49 of the file
    assert batch["pixel_values"].shape[1] == plan.frames
