"""Parity with transformers' SmolVLM image processor (PIL backend) and processor prompt strings."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import tokenization
from tokenization import geometry

smol = pytest.importorskip("transformers.models.smolvlm.image_processing_pil_smolvlm")
from transformers.image_processing_backends import PilBackend  # noqa: E402
from transformers.image_utils import SizeDict  # noqa: E402
from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string  # noqa: E402

PRESETS = tokenization.preset_names()


class CoordImage:
    """Stands in for a CHW array: knows its shape and where each crop came from, holds no pixels."""

    def __init__(self, h: int, w: int, origin=(0, 0), source: str = "resize") -> None:
        self.shape = (3, h, w)
        self.origin = origin
        self.source = source

    def __getitem__(self, key):
        _, ys, xs = key
        h, w = self.shape[1:]
        y0, y1, _ = ys.indices(h)
        x0, x1, _ = xs.indices(w)
        return CoordImage(y1 - y0, x1 - x0, (self.origin[0] + x0, self.origin[1] + y0), "crop")


@pytest.fixture
def fake_resample(monkeypatch):
    """transformers' real size arithmetic and split loop, with the pixel resampling replaced by bookkeeping."""

    def resize(self, image, size, resample=None, reducing_gap=None, **kwargs):
        return CoordImage(size.height, size.width)

    monkeypatch.setattr(PilBackend, "resize", resize)


def reference_layout(strategy, width: int, height: int):
    """(resized, size, rows, cols, boxes, last) from transformers' own resize/split calls, in _preprocess order."""
    proc = smol.SmolVLMImageProcessorPil(
        size={"longest_edge": strategy.longest_edge}, max_image_size={"longest_edge": strategy.tile}
    )
    img = CoordImage(height, width)
    resized = proc.resize(image=img, size=SizeDict(longest_edge=strategy.longest_edge))
    rsize = (resized.shape[2], resized.shape[1])
    if not strategy.do_split:
        final = proc.resize(resized, SizeDict(height=strategy.tile, width=strategy.tile))
        return rsize, (final.shape[2], final.shape[1]), 0, 0, [], final
    snapped = proc.resize_for_vision_encoder(resized, strategy.tile)
    frames, rows, cols = proc.split_images(snapped, max_image_size={"longest_edge": strategy.tile})
    boxes = [(f.origin[0], f.origin[1], f.origin[0] + f.shape[2], f.origin[1] + f.shape[1]) for f in frames[:-1]] if rows else []
    return rsize, (snapped.shape[2], snapped.shape[1]), rows, cols, boxes, frames[-1]


def extreme_sizes(strategy) -> list[tuple[int, int]]:
    t, L = strategy.tile, strategy.longest_edge
    return [
        (1, 1), (1, 5000), (5000, 1), (2, 1), (1, 2), (t, t), (t + 1, t), (t, t + 1), (t - 1, t - 1),
        (2 * t, 3 * t), (2 * t + 1, 3 * t + 1), (3 * t, 2 * t), (L, L), (L + 1, L), (L, L - 1), (L - 1, L + 1),
        (4 * t, t), (4 * t + 1, t + 1), (1920, 1080), (1080, 1920), (100, 100), (7, 3), (4097, 4095), (12000, 9000),
    ]


def random_sizes(seed: int, n: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(0, np.log(6000), n)).astype(int) + 1
    h = np.exp(rng.uniform(0, np.log(6000), n)).astype(int) + 1
    return list(zip(w.tolist(), h.tolist()))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("do_split", [True, False])
def test_grid_and_tile_boxes_match_transformers(preset, do_split, fake_resample):
    s = tokenization.get_strategy(preset, do_split=do_split)
    sizes = extreme_sizes(s) + random_sizes(hash(preset) % 1000, 300)
    for w, h in sizes:
        rsize, size, rows, cols, boxes, last = reference_layout(s, w, h)
        plan = s.plan_image(w, h)
        assert (plan.resized, plan.size, plan.rows, plan.cols) == (rsize, size, rows, cols), (preset, w, h)
        assert list(plan.tile_boxes) == boxes, (preset, w, h)
        assert last.shape[1:] == (s.tile, s.tile) and last.source == "resize"  # global (or single) image last
        assert plan.tiles == (rows * cols + 1 if rows else 1)
        assert plan.image_tokens == plan.tiles * s.image_seq_len


def test_4k_cap_matches_transformers(fake_resample):
    s = tokenization.get_strategy("smolvlm-256m", longest_edge=6000)
    for w, h in [(100, 37), (37, 100), (6001, 2), (3, 9000), (5000, 5000), (4097, 1)]:
        rsize, size, rows, cols, boxes, _ = reference_layout(s, w, h)
        plan = s.plan_image(w, h)
        assert max(plan.resized) <= geometry.MAX_IMAGE_SIZE
        assert (plan.resized, plan.size, plan.rows, plan.cols, list(plan.tile_boxes)) == (rsize, size, rows, cols, boxes)


def test_vectorized_plan_equals_scalar():
    s = tokenization.get_strategy("smolvlm-2.2b")
    sizes = random_sizes(7, 2000) + extreme_sizes(s)
    w = np.array([a for a, _ in sizes])
    h = np.array([b for _, b in sizes])
    g = s.plan_images(w, h)
    for i, (a, b) in enumerate(sizes):
        p = s.plan_image(a, b)
        assert (p.rows, p.cols, p.size, p.resized) == (g.rows[i], g.cols[i], (g.width[i], g.height[i]), (g.resized_width[i], g.resized_height[i]))
        assert max(p.rows, p.cols) <= s.max_grid_side


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + w * 7 + h)
    bands = len(mode) if mode != "L" else 1
    arr = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if bands == 1 else arr, mode)


def reference_pixels(strategy, image):
    proc = smol.SmolVLMImageProcessorPil(
        size={"longest_edge": strategy.longest_edge},
        max_image_size={"longest_edge": strategy.tile},
        do_image_splitting=strategy.do_split,
    )
    out = proc(images=[image], return_tensors="np", return_row_col_info=True)
    return out["pixel_values"][0], out["rows"][0][0], out["cols"][0][0]


def assert_same_pixels(strategy, image):
    ref, rows, cols = reference_pixels(strategy, image)
    got = strategy.split_image(image)
    assert (got.rows, got.cols) == (rows, cols)
    assert got.tiles.shape == ref.shape and got.tiles.dtype == np.float32
    assert np.abs(got.tiles - ref).max() <= 2 / 255 + 1e-6  # 1/255 before the (x - 0.5) / 0.5 normalization


@pytest.mark.parametrize("preset", PRESETS)
def test_pixels_match_transformers_extremes(preset):
    s = tokenization.get_strategy(preset)
    t = s.tile
    for w, h in [(1, 1), (1, 5000), (t, t), (t + 1, t // 2), (3 * t // 4, t // 2 + 1), (257, 131)]:
        assert_same_pixels(s, noise(w, h))


def test_pixels_match_transformers_no_split_and_alpha():
    s = tokenization.get_strategy("idefics3")
    assert_same_pixels(s.replace(do_split=False), noise(300, 200))
    assert_same_pixels(s, noise(120, 90, "RGBA"))
    assert_same_pixels(s, noise(60, 140, "LA"))
    assert_same_pixels(s, noise(50, 70, "L"))
    pal = noise(80, 60, "L").convert("P")
    pal.info["transparency"] = 3
    assert_same_pixels(s, pal)


def test_alpha_is_composited_on_white():
    s = tokenization.get_strategy("idefics3", do_split=False)
    clear = Image.new("RGBA", (40, 30), (10, 20, 30, 0))
    tiles = s.split_image(clear, normalize=False).tiles
    assert tiles.dtype == np.uint8 and (tiles == 255).all()
    normed = s.split_image(clear).tiles
    assert np.allclose(normed, 1.0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("style", ["learned", "string"])
def test_image_prompt_matches_transformers(preset, style):
    s = tokenization.get_strategy(preset, positional=style)
    n = s.max_grid_side
    for rows, cols in [(0, 0)] + [(r, c) for r in range(1, n + 1) for c in range(1, n + 1)]:
        ref = get_image_prompt_string(rows, cols, s.image_seq_len, "<fake_token_around_image>", "<image>", "<global-img>")
        assert s.image_prompt(rows, cols) == ref


def test_none_style_drops_markers_only():
    s = tokenization.get_strategy("smolvlm-256m", positional="none")
    text = s.image_prompt(3, 4)
    assert "<row_" not in text and "<global-img>" not in text
    assert text.count("<image>") == 13 * 64
    assert text.count("<fake_token_around_image>") == 12 + 2
