"""pixel_shuffle against the SmolVLM connector and nanoVLM's formulation, and its inverse."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from manifests.errors import UserError
from tokenization import get_strategy, pixel_shuffle, pixel_unshuffle


def connector_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    """transformers' SmolVLMConnector.pixel_shuffle, called as the model calls it."""
    modeling = pytest.importorskip("transformers.models.smolvlm.modeling_smolvlm")
    return modeling.SmolVLMConnector.pixel_shuffle(SimpleNamespace(scale_factor=r), x, r)


def nanovlm_reference(x: torch.Tensor, r: int) -> torch.Tensor:
    b, n, d = x.shape
    s = int(n**0.5)
    return x.reshape(b, s // r, r, s // r, r, d).permute(0, 1, 3, 2, 4, 5).reshape(b, n // r**2, d * r * r)


@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_equal_to_the_connector(r):
    torch.manual_seed(r)
    side = 12 * r if r > 1 else 7
    x = torch.randn(2, side * side, 5)
    got = pixel_shuffle(x, r)
    assert got.shape == (2, side * side // (r * r), 5 * r * r)
    assert torch.equal(got, connector_reference(x, r))
    assert torch.equal(got, nanovlm_reference(x, r))


@pytest.mark.parametrize("preset", ["smolvlm-256m", "smolvlm-2.2b", "idefics3"])
def test_preset_token_counts(preset):
    s = get_strategy(preset)
    x = torch.randn(1, s.grid_side**2, 8)
    out = pixel_shuffle(x, s.pixel_shuffle)
    assert out.shape[1] == s.image_seq_len
    assert torch.equal(out, connector_reference(x, s.pixel_shuffle))


@pytest.mark.parametrize("r", [1, 2, 3, 4])
def test_inverse_round_trip(r):
    x = torch.randn(3, (6 * r) ** 2, 4)
    assert torch.equal(pixel_unshuffle(pixel_shuffle(x, r), r), x)
    y = torch.randn(3, 36, 4 * r * r)
    assert torch.equal(pixel_shuffle(pixel_unshuffle(y, r), r), y)


def test_block_layout():
    # token (i, j) of the output holds the r x r block at (i*r, j*r) row-major, features concatenated
    side, r = 4, 2
    x = torch.arange(side * side, dtype=torch.float32).reshape(1, side * side, 1)
    out = pixel_shuffle(x, r)
    assert out[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_numpy_input():
    x = np.random.default_rng(0).normal(size=(2, 64, 3))
    assert np.array_equal(pixel_shuffle(x, 4), nanovlm_reference(torch.from_numpy(x), 4).numpy())
    assert np.array_equal(pixel_unshuffle(pixel_shuffle(x, 2), 2), x)


def test_errors_instead_of_truncation():
    with pytest.raises(UserError, match="square"):
        pixel_shuffle(torch.zeros(1, 50, 4), 2)
    with pytest.raises(UserError, match="does not divide"):
        pixel_shuffle(torch.zeros(1, 26 * 26, 4), 4)  # transformers would silently drop patches
    with pytest.raises(UserError, match="positive"):
        pixel_shuffle(torch.zeros(1, 16, 4), 0)
    with pytest.raises(UserError, match=r"\[batch, tokens, dim\]"):
        pixel_shuffle(torch.zeros(16, 4), 2)
    with pytest.raises(UserError, match="divisible"):
        pixel_unshuffle(torch.zeros(1, 16, 6), 2)
