"""Collator parity with transformers' SmolVLMProcessor on real images (grey, palette, alpha, photos, GIF), and a real video."""
from __future__ import annotations

import pytest
from PIL import Image

import tokenization
from tests.test_collate import TEXTS, assert_equal_batches, make_processor, reference
from tokenization.base_tokenizer import train_bpe
from tokenization.collate import SmolVLMCollator

pytest.importorskip("transformers.models.smolvlm.processing_smolvlm")

FILES = ["images/sklearn/china.jpg", "images/sklearn/flower.jpg", "images/skimage/camera.png", "images/skimage/logo.png",
         "images/skimage/coins.png", "images/skimage/no_time_for_that_tiny.gif", "images/skimage/rocket.jpg",
         "images/matplotlib/grace_hopper.jpg"]


@pytest.fixture(scope="module")
def base():
    return train_bpe(TEXTS * 40, vocab_size=420)


@pytest.mark.parametrize("preset", ["smolvlm-256m", "smolvlm-2.2b"])
@pytest.mark.parametrize("style", ["learned", "string"])
def test_real_images_match_the_processor(realdata, base, preset, style):
    s = tokenization.get_strategy(preset, positional=style)
    proc, fast = make_processor(s, base)
    images = [Image.open(realdata / f) for f in FILES]
    for im in images:
        im.load()
    rows = [
        {"id": "pair", "images": images[0:2], "turns": [{"role": "user", "content": "Describe the image in detail."},
                                                         {"role": "assistant", "content": "the cat"}]},
        {"id": "one", "images": images[2:3], "text": "hello world"},
        {"id": "placeholders", "images": images[3:6], "turns": [
            {"role": "user", "content": "<image> and <image>, then <image>?"}, {"role": "assistant", "content": "A red cat."}]},
        {"id": "photo", "images": images[6:8], "text": "the mat"},
    ]
    got = SmolVLMCollator(s, fast)(rows)
    assert_equal_batches(got, reference(proc, rows))


def test_real_video_row(realdata, base):
    s = tokenization.get_strategy("smolvlm-256m")
    path = realdata / "videos/gradio/world.mp4"
    row = {"id": "world", "media": [{"uri": str(path), "kind": "video"}],
           "turns": [{"role": "user", "content": "What happens?"}, {"role": "assistant", "content": "the cat"}]}
    col = SmolVLMCollator(s, base)
    batch = col([row])
    from media import probe_video

    meta = probe_video(path)
    plan = s.plan_video(meta["frames"], meta["fps"], meta.get("duration"))
    assert batch["pixel_values"].shape[1] == plan.frames
    assert int((batch["input_ids"] == col.image_token_id).sum()) == plan.image_tokens
