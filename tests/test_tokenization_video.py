"""Video frame sampling, averaging and prompts against transformers' SmolVLM video code."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tokenization
from manifests.errors import UserError
from tokenization.prompts import format_duration, number_to_words
from tokenization.video import averaged_count, frames_to_tiles, sample_frame_indices, sampled_frame_counts

vp = pytest.importorskip("transformers.models.smolvlm.video_processing_smolvlm")
from transformers.models.smolvlm import processing_smolvlm  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402


def reference_indices(total, fps, duration, max_frames=64, target_fps=1):
    meta = VideoMetadata(total_num_frames=total, fps=fps, duration=duration)
    return vp.SmolVLMVideoProcessor.sample_frames(
        SimpleNamespace(num_frames=max_frames, fps=target_fps), meta, num_frames=max_frames, fps=target_fps
    )


def random_videos(n, seed=0):
    rng = np.random.default_rng(seed)
    fps = rng.choice([1.0, 6.0, 10.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0], n)
    dur = np.exp(rng.uniform(np.log(0.05), np.log(3600), n))
    total = np.maximum(1, np.round(dur * fps)).astype(int)
    return list(zip(total.tolist(), fps.tolist(), dur.tolist()))


def test_indices_match_transformers():
    vids = random_videos(600) + [(1, 30.0, 0.03), (2, 25.0, 0.08), (65, 1.0, 65.0), (66 * 30, 30.0, 66.0), (67 * 30, 30.0, 67.0),
                                 (300, 10.0, 30.0), (7200, 1.0, 7200.0), (45, 30.0, 1.5)]
    for total, fps, dur in vids:
        for max_frames, target in [(64, 1), (8, 2), (16, 0.5)]:
            ref = reference_indices(total, fps, dur, max_frames, target)
            got = sample_frame_indices(total, fps, dur, fps=target, max_frames=max_frames)
            assert got.tolist() == ref.tolist(), (total, fps, dur, max_frames, target)


def test_vectorized_counts_equal_len_of_indices():
    vids = random_videos(3000, seed=1) + [(1, 30.0, 0.03), (3, 0.5, 6.0), (10, 0.1, 100.0)]
    total, fps, dur = (np.array(v, dtype=float) for v in zip(*vids))
    for max_frames, target in [(64, 1.0), (8, 2.0), (200, 4.0)]:
        counts = sampled_frame_counts(total, fps, dur, fps=target, max_frames=max_frames, skip_secs=1.0)
        expected = [len(sample_frame_indices(int(t), f, d, fps=target, max_frames=max_frames)) for t, f, d in vids]
        assert counts.tolist() == expected


def test_defaults_fps_one_at_most_64_skip_one_second():
    s = tokenization.get_strategy("smolvlm-256m")
    idx = s.sample_frames(25 * 600, 25.0, 600.0)
    assert len(idx) == 64 and idx[0] == 25 and idx[-1] == 25 * 599
    short = s.sample_frames(250, 25.0, 10.0)
    assert len(short) == 10 and short[0] == 0 and short[-1] == 249


def test_bad_video_metadata():
    with pytest.raises(UserError, match="no frames"):
        sample_frame_indices(0, 25.0, 1.0)
    with pytest.raises(UserError, match="frame rate"):
        sample_frame_indices(10, 0.0, 1.0)


@pytest.mark.parametrize(
    "n, words",
    [(0, "zero"), (1, "one"), (13, "thirteen"), (20, "twenty"), (21, "twenty-one"), (64, "sixty-four"), (100, "one hundred"),
     (101, "one hundred and one"), (1000, "one thousand"), (1001, "one thousand and one"), (1100, "one thousand, one hundred"),
     (2050, "two thousand and fifty"), (101000, "one hundred and one thousand"), (1000001, "one million and one")],
)
def test_number_words(n, words):
    assert number_to_words(n) == words


def test_number_words_match_num2words():
    num2words = pytest.importorskip("num2words").num2words
    for n in list(range(0, 2100)) + [12345, 99999, 100000, 123456, 1000000, 2000017, 987654321]:
        assert number_to_words(n) == num2words(n)


@pytest.mark.parametrize("preset", ["smolvlm-256m", "smolvlm-2.2b", "idefics3"])
def test_video_prompt_matches_transformers(preset, monkeypatch):
    s = tokenization.get_strategy(preset)
    monkeypatch.setattr(processing_smolvlm, "num2words", number_to_words)  # transformers needs the num2words package
    fake = SimpleNamespace(image_seq_len=s.image_seq_len, image_token="<image>", fake_image_token="<fake_token_around_image>",
                           global_image_token="<global-img>")
    for total, fps, dur in [(750, 25.0, 30.0), (90000, 25.0, 3600.0), (40, 10.0, 4.0), (1, 30.0, 0.03)]:
        plan = s.plan_video(total, fps, dur)
        meta = VideoMetadata(total_num_frames=total, fps=fps, duration=dur, frames_indices=list(plan.indices))
        inputs = {"pixel_values": np.zeros((1, len(plan.indices), 3, 2, 2)), "video_metadata": [meta]}
        ref = processing_smolvlm.SmolVLMProcessor.replace_video_token(fake, inputs, 0)
        assert plan.prompt == ref
        assert plan.prompt.count("<image>") == plan.image_tokens == len(plan.indices) * s.image_seq_len


def test_video_prompt_options():
    s = tokenization.get_strategy("smolvlm-256m")
    plan = s.plan_video(750, 25.0, 30.0)
    assert plan.prompt.startswith("You are provided the following series of thirty frames from a 0:00:30 [H:MM:SS] video.\n")
    assert plan.prompt.endswith("<fake_token_around_image>\n\n")
    bare = s.replace(media_intro=False, media_outro=False).plan_video(750, 25.0, 30.0)
    assert bare.prompt.startswith("\nFrame from 00:00:") and bare.prompt.endswith("<fake_token_around_image>")
    assert bare.seq_len < plan.seq_len
    none = s.replace(positional="none").plan_video(750, 25.0, 30.0)
    assert "<global-img>" not in none.prompt


def test_frame_averaging_plan_and_pixels():
    s = tokenization.get_strategy("idefics3", frame_averaging=4)
    plan = s.plan_video(750, 25.0, 30.0)
    assert len(plan.indices) == 30 and plan.frames == 8 == averaged_count(30, 4)
    assert plan.timestamps[1] == plan.indices[4] / 25.0
    assert plan.prompt.startswith("You are provided the following series of eight frames")
    frames = np.stack([np.full((48, 64, 3), 10 * i, dtype=np.uint8) for i in range(6)])
    tiles = frames_to_tiles(s, frames, normalize=False)
    assert tiles.shape == (2, 3, 364, 364)
    assert (tiles[0] == 15).all() and (tiles[1] == 45).all()  # mean of 0,10,20,30 -> 15; of 40,50 -> 45
    plain = frames_to_tiles(s.replace(frame_averaging=1), frames)
    assert plain.shape == (6, 3, 364, 364) and plain.dtype == np.float32
    assert np.allclose(plain[0], -1.0)
    assert np.array_equal(averaged_count(np.array([1, 4, 5]), 4), [1, 1, 2])


def test_duration_format():
    assert format_duration(30.7) == "0:00:30" and format_duration(3725) == "1:02:05"
