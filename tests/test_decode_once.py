"""Decode once (issue #12): one file read and one decode per input, whatever the operators that read it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from curation import synth
from curation.engine.job import run_job
from curation.recipe import parse_recipe
import media as M
from media import counters, video_backend
from media.decoded import DecodeNeeds, SharedDecode, decode_media, decode_threads


def _images(root: Path) -> Path:
    """Six images in four formats, one a byte copy (exact dedup must find it) and one with EXIF rotation."""
    folder = root / "photos"
    folder.mkdir(parents=True)
    synth.photo_like(1, (640, 480)).save(folder / "a.jpg", quality=90)
    synth.photo_like(2, (300, 200)).save(folder / "b.png")
    synth.photo_like(3, (200, 300)).save(folder / "c.webp", quality=80)
    synth.photo_like(4, (96, 64)).convert("P").save(folder / "d.gif")
    (folder / "e.jpg").write_bytes((folder / "a.jpg").read_bytes())
    img = synth.photo_like(5, (400, 240))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(folder / "f.jpg", exif=exif, quality=90)
    return folder


def _run(root: Path, body: dict, name: str = "out") -> tuple[dict[str, int], pa.Table]:
    recipe = parse_recipe(body, base_dir=str(root))
    counters.reset()
    with counters.counting() as counts:
        run_job(recipe, root / name, engine="local", quiet=True, overwrite=True)
    return counts, pads.dataset(root / name / "data", format="parquet").to_table().sort_by("id")


def test_one_read_and_one_decode_per_image_with_filters_exact_and_image_dedup(tmp_path):
    _images(tmp_path)
    body = {"sources": [{"name": "photos", "kind": "images", "path": "photos", "chunk_size": 4}],
            "dedup": {"exact": True, "image": {}}, "tokens": {"strategy": "smolvlm-256m"}}
    counts, rows = _run(tmp_path, body)
    assert counts == {"read.image": 6, "decode.image": 6}, counts
    assert rows.num_rows == 5  # the byte copy went to the ledger
    assert all(v is not None for v in rows.column("sig_pixels").to_pylist())
    assert all(v for v in rows.column("sig_phash").to_pylist())
    # the EXIF-rotated image reports its display size and a pixel hash of the rotated pixels
    f = [m[0] for m in rows.column("media").to_pylist() if m[0]["uri"].endswith("f.jpg")][0]
    assert (f["width"], f["height"]) == (240, 400)


def test_embedding_reuses_the_read_bytes(tmp_path):
    folder = _images(tmp_path)
    body = {"sources": [{"name": "photos", "kind": "images", "path": "photos"}], "dedup": {"exact": True, "image": {}},
            "output": {"embed_images": True}}
    counts, rows = _run(tmp_path, body)
    assert counts == {"read.image": 6, "decode.image": 6}, counts
    media = {m[0]["uri"].rsplit("/", 1)[-1]: m[0] for m in rows.column("media").to_pylist()}
    assert media["b.png"]["bytes"] == (folder / "b.png").read_bytes()


def test_documents_and_videos_read_and_decode_once(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    synth.write_text_pdf(docs / "a.pdf", ["first page of text " * 20, "second page " * 30])
    synth.text_page("a scanned page " * 40).save(docs / "scan.png")
    vids = tmp_path / "clips"
    vids.mkdir()
    synth.write_video(vids / "m.mp4", synth.moving_frames(24))
    body = {"sources": [{"name": "docs", "kind": "document", "path": "docs/*.p*"},
                        {"name": "clips", "kind": "video", "path": "clips"}],
            "dedup": {"exact": True, "image": {}, "video": {}}}
    counts, rows = _run(tmp_path, body)
    # pdf: one read; renders: page 0 once (blank-page score and pHash), page 1 once (pHash)
    assert counts.get("read.pdf") == 1 and counts.get("decode.pdf") == 2, counts
    assert counts.get("read.image") == 1 and counts.get("decode.image") == 1, counts
    # video: one file read (the byte hash, the probe and the frames all use those bytes), one probe, one
    # batch of sampled frames for motion, frame hashes and the frame pixel hash
    assert counts.get("probe.video") == 1 and counts.get("decode.video") == 1, counts
    assert counts.get("read.video") == 1, counts
    by_source = dict(zip(rows.column("source").to_pylist(), rows.column("sig_vhash").to_pylist()))
    assert len(by_source["clips"]) == 8


def _videos(root: Path) -> Path:
    vids = root / "clips"
    vids.mkdir()
    synth.write_video(vids / "m.mp4", synth.moving_frames(24))
    synth.write_video(vids / "s.mp4", synth.moving_frames(30, seed=3))
    return vids


def test_videos_are_read_once_with_exact_dedup_and_full_decode(tmp_path):
    vids = _videos(tmp_path)
    body = {"sources": [{"name": "clips", "kind": "video", "path": "clips"}],
            "dedup": {"exact": True, "video": {}}, "filters": {"video": {"full_decode": True}}}
    counts, rows = _run(tmp_path, body)
    # per video: one read; one probe; the sampled frames and the every-frame check decoded from the same bytes
    assert counts == {"read.video": 2, "probe.video": 2, "decode.video": 4}, counts
    assert rows.num_rows == 2
    # the byte hash of the read bytes is the file's hash
    from media.digests import digest

    by_uri = {m[0]["uri"].rsplit("/", 1)[-1]: d for m, d in zip(rows.column("media").to_pylist(),
                                                                 rows.column("sig_bytes").to_pylist())}
    assert by_uri["m.mp4"] == digest((vids / "m.mp4").read_bytes())


def test_video_from_memory_decodes_what_the_path_decodes(tmp_path):
    vids = _videos(tmp_path)
    needs = DecodeNeeds(video_frames=(8,), video_side=64, byte_digest=True)
    path = vids / "m.mp4"
    counters.reset()
    from_path = decode_media({"kind": "video", "uri": str(path)}, needs)
    assert counters.snapshot() == {"read.video": 1, "probe.video": 1, "decode.video": 1}
    # embedded bytes (a tar member, an object on a store) decode the same, and are read from nowhere
    counters.reset()
    from_bytes = decode_media({"kind": "video", "uri": "x.mp4", "bytes": path.read_bytes()}, needs)
    assert counters.snapshot() == {"probe.video": 1, "decode.video": 1}
    assert from_bytes.error is None and from_bytes.byte_digest == from_path.byte_digest
    assert np.array_equal(from_bytes.frames, from_path.frames) and from_bytes.video == from_path.video
    # a broken video's error names its path, not "<bytes>"
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(path.read_bytes()[:200])
    got = decode_media({"kind": "video", "uri": str(bad)}, needs)
    assert got.error is not None and got.error.reason == "undecodable" and str(bad) in got.error.detail
    # decord reads bytes through a memory file: its messages still name the input (ledger details are stable)
    if video_backend() == "decord":
        with pytest.raises(M.MediaError) as exc:
            M.read_video_frames(b"\x00junk" * 64, [0], backend="decord", label="junk.mp4")
        assert exc.value.detail.startswith("junk.mp4: ") and "/proc/" not in exc.value.detail


def test_clips_of_one_video_share_one_read_and_a_large_video_is_streamed(tmp_path, monkeypatch):
    import media.decoded as D

    vids = _videos(tmp_path)
    path = str(vids / "s.mp4")
    needs = DecodeNeeds(video_frames=(4,), video_side=64, byte_digest=True)
    clips = [{"kind": "video", "uri": path, "start_s": a, "end_s": b} for a, b in ((0.0, 0.5), (0.5, 1.0))]
    shared = SharedDecode(needs, threads=2)
    table = pa.table({"_pos": [0, 1], "media": [[clips[0]], [clips[1]]]})
    counters.reset()
    shared.prepare(table)
    assert counters.snapshot() == {"read.video": 1, "probe.video": 2, "decode.video": 2}
    assert not D._CLIP_VIDEOS._items  # nothing held once the chunk is decoded
    first, second = shared.get(0, 0, clips[0]), shared.get(1, 0, clips[1])
    assert first.byte_digest == second.byte_digest and first.frame_indices[0] < second.frame_indices[0]
    # over the in-memory cap: hashed while streamed, then the decoders read the path (two reads, counted)
    monkeypatch.setattr(D, "VIDEO_IN_MEMORY_MAX", 1024)
    counters.reset()
    big = decode_media({"kind": "video", "uri": path}, needs)
    assert counters.snapshot() == {"read.video": 2, "probe.video": 1, "decode.video": 1}
    small = decode_media({"kind": "video", "uri": path, "bytes": (vids / "s.mp4").read_bytes()}, needs)
    assert big.byte_digest == small.byte_digest and np.array_equal(big.frames, small.frames)


def _shots(root: Path) -> Path:
    """Two videos of distinct shots (each cut into several clips), 10 frames per second."""
    vids = root / "shots"
    vids.mkdir()
    for name, seeds in (("a.mp4", (1, 2, 3)), ("b.mp4", (4, 5))):
        synth.write_video(vids / name, np.concatenate([synth.moving_frames(20 + 5 * k, seed=s)
                                                       for k, s in enumerate(seeds)]), fps=10)
    return vids


def test_a_clip_source_reads_each_video_once(tmp_path, monkeypatch):
    """The scene scan's read is the only one: the clips' byte hash and sampled frames decode those bytes.
    The output is the one the clips get when every consumer opens the file itself (over the in-memory cap)."""
    import media.decoded as D

    _shots(tmp_path)
    body = {"sources": [{"name": "clips", "kind": "video", "path": "shots", "clips": {"method": "scenes"}}],
            "dedup": {"exact": True, "video": {}}, "tokens": {"strategy": "smolvlm-256m"}}
    counts, rows = _run(tmp_path, body)
    clips = rows.num_rows
    assert clips >= 4 and sorted({m[0]["uri"].rsplit("/", 1)[-1] for m in rows.column("media").to_pylist()}) == \
        ["a.mp4", "b.mp4"]
    # per video: one read, one scan; per clip: one batch of sampled frames (a clip reference needs no probe)
    assert counts == {"read.video": 2, "scan.video": 2, "decode.video": clips}, counts
    assert not D._CLIP_VIDEOS._items
    # over the cap: the scan streams the file, the byte hash streams it once more, each clip's decoder opens it
    monkeypatch.setattr(D, "VIDEO_IN_MEMORY_MAX", 1024)
    streamed, again = _run(tmp_path, body, "streamed")
    assert streamed == {"read.video": 2 + 2 + clips, "scan.video": 2, "decode.video": clips}, streamed
    assert again.to_pylist() == rows.to_pylist()  # same rows, clip spans, byte and frame hashes, scores


def test_held_clip_videos_stay_within_the_cap(tmp_path, monkeypatch):
    """Held bytes are released by their last clip; a video that would pass the cap is not held (its clips
    read it again, counted), and what earlier reads kept never pushes a held video out."""
    import media.decoded as D

    vids = _shots(tmp_path)
    a, b = str(vids / "a.mp4"), str(vids / "b.mp4")
    counters.reset()
    data_a, key_a = D.read_clip_video(a)
    data_b, key_b = D.read_clip_video(b)
    assert data_a == (vids / "a.mp4").read_bytes() and counters.snapshot() == {"read.video": 2}
    monkeypatch.setattr(D, "VIDEO_IN_MEMORY_MAX", len(data_a) + len(data_b) - 1)
    store = D._ClipVideos()
    assert store.hold(key_a, data_a, 2) and not store.hold(key_b, data_b, 1)
    assert store.read(*key_a) is data_a and store.read(*key_a) is data_a  # two clips of a: no read
    assert not store._items and counters.snapshot() == {"read.video": 2}
    assert store.hold(key_a, data_a, 1)
    assert store.read(*key_b) == data_b and counters.snapshot() == {"read.video": 3}  # b was not held
    assert key_a in store._items  # b's kept bytes pass the cap, yet the held a stays
    assert store.read(*key_a) is data_a and list(store._items) == [key_b]
    assert not D.hold_clip_video(key_a, data_a, 0) and not D.hold_clip_video(key_a, None, 3)


def test_threads_do_not_change_the_result(tmp_path):
    _images(tmp_path)
    base = {"sources": [{"name": "photos", "kind": "images", "path": "photos"}], "dedup": {"exact": True, "image": {}}}
    _, one = _run(tmp_path, {**base, "decode": {"threads": 1}}, "one")
    _, three = _run(tmp_path, {**base, "decode": {"threads": 3}}, "three")
    assert one.equals(three)


def test_decode_threads_never_exceed_the_cpus_allowed():
    import os

    allowed = len(os.sched_getaffinity(0))
    assert decode_threads(None) == allowed
    assert decode_threads(1) == 1
    assert decode_threads(allowed + 5) == allowed


def test_shared_decode_serves_every_need_from_one_decode(tmp_path):
    folder = _images(tmp_path)
    from curation.dedup import verify as V
    from media.thumbs import grey_thumb

    shared = SharedDecode(DecodeNeeds(grey_side=128, max_pixels=10**8))
    shared.want(DecodeNeeds(rgb_side=64, full_pixels=True, byte_digest=True, verify_side=48))
    ref = {"kind": "image", "uri": str(folder / "a.jpg")}
    counters.reset()
    got = decode_media(ref, shared.needs)
    assert counters.snapshot() == {"decode.image": 1, "read.image": 1}
    assert got.grey.mode == "L" and max(got.grey.size) == 128
    assert got.rgb.mode == "RGB" and max(got.rgb.size) == 64
    assert got.hash_thumb.shape == (32, 32) and got.color_thumb.shape == (16, 16, 3)
    # every grey thumbnail starts from one grey conversion of the RGB reduction, with the same values
    assert np.array_equal(got.rgb_grey, got.rgb.convert("L"))
    assert np.array_equal(got.hash_thumb, grey_thumb(got.rgb))
    assert np.array_equal(got.verify_thumb, V.verify_thumb(got.rgb))
    assert got.pixel_digest is not None and len(got.byte_digest) == 16
    # a missing file is an error on the record, never an exception
    bad = decode_media({"kind": "image", "uri": str(folder / "nope.jpg")}, shared.needs)
    assert bad.error is not None and bad.error.reason == "missing"
    with pytest.raises(Exception):
        bad.check()


def test_simplejpeg_and_pillow_decode_identical_pixels(tmp_path, monkeypatch):
    """The libjpeg-turbo fast path is an implementation detail: Pillow gives the very same pixels."""
    import media.image as MI

    folder = _images(tmp_path)
    needs = DecodeNeeds(grey_side=128, rgb_side=128, full_pixels=True)
    fast = [decode_media({"kind": "image", "uri": str(folder / n)}, needs) for n in ("a.jpg", "f.jpg")]
    reduced = [decode_media({"kind": "image", "uri": str(folder / n)}, DecodeNeeds(grey_side=96))
               for n in ("a.jpg", "f.jpg")]
    monkeypatch.setattr(MI, "_simplejpeg", None)
    slow = [decode_media({"kind": "image", "uri": str(folder / n)}, needs) for n in ("a.jpg", "f.jpg")]
    slow_reduced = [decode_media({"kind": "image", "uri": str(folder / n)}, DecodeNeeds(grey_side=96))
                    for n in ("a.jpg", "f.jpg")]
    for a, b in zip(fast + reduced, slow + slow_reduced):
        assert a.pixel_digest == b.pixel_digest
        assert np.array_equal(np.asarray(a.grey), np.asarray(b.grey))


def test_integer_scores_equal_the_float_definitions():
    """Sharpness and low-information scores of 8-bit grey images come from exact integer sums (cheaper than
    ndarray.var on small images); they are the float32 definitions up to float32 rounding."""
    from curation.filters.common import laplacian_variance, low_info_score

    rng = np.random.default_rng(5)
    for h, w in ((128, 96), (3, 3), (2, 50), (1, 1), (40, 7)):
        g = rng.integers(0, 256, (h, w), dtype=np.uint8)
        f = g.astype(np.float32)
        lap = f[:-2, 1:-1] + f[2:, 1:-1] + f[1:-1, :-2] + f[1:-1, 2:] - 4 * f[1:-1, 1:-1]
        want = float(lap.var()) if min(h, w) >= 3 else 0.0
        assert laplacian_variance(g) == pytest.approx(want, rel=1e-5, abs=1e-9)
        assert low_info_score(g) == pytest.approx(max(0.0, 1 - float(f.std()) / 32), abs=1e-6)
    assert low_info_score(np.full((9, 9), 77, np.uint8)) == 1.0 and laplacian_variance(np.zeros((9, 9), np.uint8)) == 0
