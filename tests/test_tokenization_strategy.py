"""Presets, overrides, validation and image plans of tokenization strategies."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import tokenization
from manifests.errors import UserError
from tokenization.strategy import parse_assignments


@pytest.mark.parametrize(
    "preset, edge, tile, patch, r, seq",
    [
        ("smolvlm-256m", 2048, 512, 16, 4, 64),
        ("smolvlm-500m", 2048, 512, 16, 4, 64),
        ("smolvlm-2.2b", 1536, 384, 14, 3, 81),
        ("idefics3", 1456, 364, 14, 2, 169),
    ],
)
def test_presets(preset, edge, tile, patch, r, seq):
    s = tokenization.get_strategy(preset)
    assert (s.longest_edge, s.tile, s.patch, s.pixel_shuffle, s.image_seq_len) == (edge, tile, patch, r, seq)
    assert s.name == preset
    assert s.max_grid_side == 4


def test_strategy_is_frozen_and_hashable():
    s = tokenization.get_strategy("smolvlm-256m")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tile = 384  # type: ignore[misc]
    assert s == tokenization.get_strategy("smolvlm-256m")
    assert len({s, tokenization.get_strategy("smolvlm-256m"), s.replace(positional="none")}) == 2


def test_every_field_can_be_overridden():
    base = tokenization.get_strategy("smolvlm-256m")
    s = tokenization.get_strategy(
        "smolvlm-256m", tile=384, patch=14, pixel_shuffle=3, longest_edge=1536, do_split=False, positional="none",
        video_fps=2, video_max_frames=16, frame_averaging=4, media_intro=False, system_prompt=True,
        image_mean=(0.48, 0.45, 0.40), image_std=0.25,
    )
    assert (s.tile, s.patch, s.pixel_shuffle, s.image_seq_len) == (384, 14, 3, 81)
    assert s.do_split is False and s.positional == "none" and s.video_fps == 2.0 and s.frame_averaging == 4
    assert s.image_std == (0.25, 0.25, 0.25) and s.image_mean == (0.48, 0.45, 0.40)
    assert base.tile == 512  # the preset itself is untouched


def test_string_overrides_are_parsed_like_cli_set():
    raw = parse_assignments(["tile=384", "patch=14", "pixel_shuffle=3", "do_split=false", "video_fps=0.5",
                             "image_mean=0.1,0.2,0.3", "image_intro_text=Here is an image:\\n"])
    s = tokenization.get_strategy("smolvlm-256m", **raw)
    assert (s.tile, s.do_split, s.video_fps, s.image_mean) == (384, False, 0.5, (0.1, 0.2, 0.3))
    assert s.image_intro_text == "Here is an image:\n"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"tile": 0}, "tile"),
        ({"patch": -16}, "patch"),
        ({"pixel_shuffle": 3}, "pixel_shuffle"),  # 32 patches per side, r=3 does not divide
        ({"pixel_shuffle": 5}, "pixel_shuffle"),
        ({"positional": "rotary"}, "positional"),
        ({"tile": "big"}, "tile"),
        ({"do_split": "maybe"}, "do_split"),
        ({"video_fps": 0}, "video_fps"),
        ({"frame_averaging": 0}, "frame_averaging"),
        ({"image_std": (1, 0, 1)}, "image_std"),
        ({"video_intro_text": "{frames} frames"}, "video_intro_text"),
        ({"frame_template": "at {time}"}, "frame_template"),
        ({"colour": 1}, "colour"),
        ({"patch": 1024}, "patch"),
    ],
)
def test_bad_fields_name_the_field(kwargs, field):
    with pytest.raises(UserError) as err:
        tokenization.get_strategy("smolvlm-256m", **kwargs)
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown preset 'smolvlm-9b'") as err:
        tokenization.get_strategy("smolvlm-9b")
    assert err.value.field == "preset"


def test_bad_set_syntax():
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["tile"])
    with pytest.raises(UserError) as err:
        parse_assignments(["tiles=3"])
    assert err.value.field == "tiles"


@pytest.mark.parametrize("w, h", [(0, 10), (10, 0), (-5, 10), (10, -1)])
def test_zero_or_negative_sizes_raise(w, h):
    s = tokenization.get_strategy("smolvlm-256m")
    with pytest.raises(UserError, match="positive"):
        s.plan_image(w, h)
    with pytest.raises(UserError):
        s.plan_images([w], [h])


def test_non_integer_size_raises():
    with pytest.raises(UserError, match="integer"):
        tokenization.get_strategy("smolvlm-256m").plan_image(10.5, 10)


def test_worked_examples_from_the_facts_file():
    s = tokenization.get_strategy("smolvlm-256m")
    p = s.plan_image(1920, 1080)
    assert (p.size, p.rows, p.cols, p.tiles, p.image_tokens) == ((2048, 1536), 3, 4, 13, 832)
    p = s.plan_image(100, 100)
    assert (p.size, p.rows, p.cols, p.tiles, p.image_tokens) == ((2048, 2048), 4, 4, 17, 1088)
    p = tokenization.get_strategy("smolvlm-2.2b").plan_image(1920, 1080)
    assert (p.size, p.rows, p.cols, p.tiles, p.image_tokens) == ((1536, 1152), 3, 4, 13, 1053)


def test_no_split_is_one_tile():
    s = tokenization.get_strategy("smolvlm-256m", do_split=False)
    p = s.plan_image(1920, 1080)
    assert (p.rows, p.cols, p.tiles, p.size, p.image_tokens, p.tile_boxes) == (0, 0, 1, (512, 512), 64, ())
    out = s.split_image(Image.new("RGB", (1920, 1080), (255, 0, 0)))
    assert out.tiles.shape == (1, 3, 512, 512)


def test_split_tiles_are_row_major_with_global_last():
    s = tokenization.get_strategy("idefics3", longest_edge=728)  # 2x2 grid of 364 tiles
    arr = np.zeros((728, 728, 3), dtype=np.uint8)
    for i, (y, x) in enumerate([(0, 0), (0, 364), (364, 0), (364, 364)]):
        arr[y:y + 364, x:x + 364] = 40 * (i + 1)
    out = s.split_image(arr, normalize=False)
    assert (out.rows, out.cols) == (2, 2) and out.tiles.shape == (5, 3, 364, 364)
    for i in range(4):
        assert (out.tiles[i] == 40 * (i + 1)).all()
    assert sorted(np.unique(out.tiles[4]).tolist())[0] >= 30  # the global image holds every quadrant
    assert {40, 160} <= set(np.unique(out.tiles[4]).tolist())


def test_normalization_uses_mean_and_std():
    s = tokenization.get_strategy("idefics3", do_split=False, image_mean=(0.0, 0.5, 1.0), image_std=(1.0, 0.5, 0.25))
    out = s.split_image(Image.new("RGB", (20, 20), (255, 255, 255))).tiles
    assert np.allclose(out[0, :, 0, 0], [1.0, 1.0, 0.0])


def test_sequence_lengths_per_style():
    s = tokenization.get_strategy("smolvlm-256m")
    lens = s.sequence_lengths(3, 4)
    # learned: 13 x 64 image tokens + 12 (fake + marker) + global (fake, marker, fake) + 3 newline runs
    assert lens["learned"] == 832 + 24 + 3 + 3
    assert lens["none"] == 832 + 12 + 2 + 3
    assert lens["string"] > lens["learned"] + 12 * 5  # each marker is several pieces
    assert s.sequence_lengths(0, 0) == {"learned": 67, "string": 66 + 5, "none": 66}
    assert s.plan_image(1920, 1080).seq_len == lens["learned"]


def test_image_intro_outro_and_none_style():
    s = tokenization.get_strategy("idefics3", image_intro_text="<img>", image_outro_text="</img>")
    text = s.image_prompt(0, 0)
    assert text.startswith("<img><fake_token_around_image><global-img>") and text.endswith("</img>")
    off = s.replace(media_intro=False, media_outro=False).image_prompt(0, 0)
    assert off == "<fake_token_around_image><global-img>" + "<image>" * 169 + "<fake_token_around_image>"
    with pytest.raises(UserError):
        s.image_prompt(2, 0)


def test_to_dict_round_trips():
    s = tokenization.get_strategy("smolvlm-2.2b", frame_averaging=2)
    d = json.loads(json.dumps(s.to_dict()))
    assert tokenization.Strategy.from_dict(d) == s
    with pytest.raises(UserError) as err:
        tokenization.Strategy.from_dict({**d, "tiles": 3})
    assert err.value.field == "tiles"


@pytest.mark.parametrize("style", ["learned", "string", "none"])
def test_piecewise_counts_equal_whole_prompt_counts(style):
    from tokenization.counting import Counter

    s = tokenization.get_strategy("smolvlm-2.2b", positional=style, image_intro_text="Image:", image_outro_text=" done.")
    counter = Counter(s)
    table = counter.image_table()
    for r, c in [(0, 0)] + [(r, c) for r in range(1, 5) for c in range(1, 5)]:
        whole = counter.count(s.image_prompt(r, c))
        assert counter.block_tokens(r, c) == whole == table[r, c] == s.sequence_length(r, c)
    assert table[0, 2] == 0 and table[3, 0] == 0  # grids that cannot occur


@pytest.mark.parametrize("mean, std", [((0.5,) * 3, (0.5,) * 3), ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
                                       ((0.0, 0.3, 1.0), (1.0, 0.7, 0.25))])
def test_normalizer_equals_the_float32_table(mean, std):
    from tokenization.pixels import Normalizer, normalization_lut

    norm = Normalizer(mean, std)
    src = np.arange(256, dtype=np.uint8).reshape(16, 16)
    lut = normalization_lut(mean, std)
    # transformers: float64 rescale by 1/255, cast to float32, then (x - mean) / std in float32
    ref = ((src.astype(np.float64) * (1 / 255)).astype(np.float32)[None] - np.float32(mean)[:, None, None]) / np.float32(std)[:, None, None]
    for c in range(3):
        out = np.empty((16, 16), dtype=np.float32)
        norm(c, src, out)
        assert np.array_equal(out, ref[c]) and np.array_equal(out.ravel(), lut[c])
        norm.ops[c] = None  # the table gather fallback gives the same
        norm(c, src.T, out)
        assert np.array_equal(out, ref[c].T)
