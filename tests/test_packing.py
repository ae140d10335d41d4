"""Packing invariants: no sample cut, each sample in exactly one pack, positions restart, caps hold, efficiency."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import tokenization
from manifests.errors import UserError
from tokenization import packing as P
from tokenization.base_tokenizer import train_bpe
from tokenization.collate import IGNORE_INDEX, SmolVLMCollator


def next_fit(lens, cap, imgs=None, max_images=None):
    """The obvious loop, as the reference for the vectorized greedy packer."""
    out, load, nimg, pid = [], 0, 0, 0
    for i, n in enumerate(lens):
        k = 0 if imgs is None else imgs[i]
        if i and (load + n > cap or (max_images is not None and nimg + k > max_images)):
            pid, load, nimg = pid + 1, 0, 0
        load, nimg = load + n, nimg + k
        out.append(pid)
    return np.array(out, dtype=np.int64)


def realistic_lengths(n, seed=0):
    """SmolVLM-256M-like samples: 1-17 tiles of 64 tokens plus markers, text of a few dozen to a few hundred tokens."""
    rng = np.random.default_rng(seed)
    tiles = rng.choice([1, 5, 7, 10, 13, 17], size=n, p=[0.2, 0.1, 0.15, 0.2, 0.25, 0.1])
    text = rng.lognormal(4.5, 0.9, n).astype(np.int64) + 10
    images = np.where(rng.random(n) < 0.1, 0, 1 + (rng.random(n) < 0.05))
    return np.where(images > 0, tiles * 67 * images, 0) + text, images


@pytest.mark.parametrize("seed", range(5))
def test_greedy_equals_next_fit(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(1, 300))
        cap = int(rng.integers(8, 600))
        lens = rng.integers(1, cap + 1, n)
        imgs = rng.integers(0, 4, n)
        mi = int(rng.integers(3, 9))
        assert np.array_equal(P.pack_greedy(lens, cap), next_fit(lens, cap))
        assert np.array_equal(P.pack_greedy(lens, cap, imgs, mi), next_fit(lens, cap, imgs, mi))


@pytest.mark.parametrize("method", P.PACKERS)
def test_every_sample_in_exactly_one_pack_within_caps(method):
    lens, imgs = realistic_lengths(3000, seed=1)
    ids = P.pack(method, lens, 8192, imgs, max_images=6)
    assert ids.shape == lens.shape and ids.min() == 0
    groups = P.groups(ids)
    members = np.concatenate(groups)
    assert np.array_equal(np.sort(members), np.arange(lens.size))  # each sample once
    assert len(groups) == ids.max() + 1  # pack ids are dense
    for g in groups:
        assert lens[g].sum() <= 8192 and imgs[g].sum() <= 6
    if method == "greedy":  # in order: packs are contiguous runs of samples
        assert (np.diff(ids) >= 0).all() and (np.diff(ids) <= 1).all()


def test_efficiency_on_a_realistic_distribution():
    lens, imgs = realistic_lengths(20000, seed=2)
    for method, cap in (("knapsack", 8192), ("greedy", 16384)):
        ids = P.pack(method, lens, cap, imgs, max_images=64)
        stats = P.pack_stats(lens, ids, cap, image_tokens=np.where(imgs > 0, lens - 50, 0))
        assert stats.efficiency >= 0.95, (method, stats.efficiency)
        assert stats.tokens == lens.sum() and stats.samples == lens.size
        assert len(stats.image_tokens_per_pack) == stats.packs


def test_knapsack_is_balanced_and_never_worse_than_greedy():
    lens, _ = realistic_lengths(5000, seed=3)
    g = P.pack_stats(lens, P.pack_greedy(lens, 8192), 8192)
    k = P.pack_stats(lens, P.pack_knapsack(lens, 8192), 8192)
    assert k.packs <= g.packs and k.efficiency >= g.efficiency


def test_layout_restarts_positions():
    pos, seq = P.layout([3, 1, 2], 8)
    assert pos.tolist() == [0, 1, 2, 0, 0, 1, 0, 0]
    assert seq.tolist() == [1, 1, 1, 2, 3, 3, 0, 0]
    mask = P.block_causal_mask(torch.from_numpy(seq)[None])
    assert mask.shape == (1, 1, 8, 8)
    assert mask[0, 0, 2, 0] and not mask[0, 0, 3, 2] and not mask[0, 0, 0, 1] and not mask[0, 0, 7].any()


def test_overlong_and_bad_inputs_raise():
    with pytest.raises(UserError, match="sample 1 has 20 tokens, more than the pack capacity 10"):
        P.pack_greedy([5, 20], 10)
    with pytest.raises(UserError, match="max_images_per_pack"):
        P.pack_knapsack([5, 5], 10, images=[1, 7], max_images=4)
    with pytest.raises(UserError):
        P.pack("first-fit", [1], 10)
    assert P.pack_greedy([], 10).size == 0 and P.pack_knapsack([], 10).size == 0


def test_greedy_packs_a_million_lengths_fast():
    import time

    lens = np.clip(np.random.default_rng(0).lognormal(6.5, 0.8, 1_000_000).astype(np.int64), 1, 8192)
    t = time.perf_counter()
    ids = P.pack_greedy(lens, 8192)
    dt = time.perf_counter() - t
    assert ids[-1] == P.pack_stats(lens, ids, 8192).packs - 1
    assert dt < 3.0  # >= 1M rows/s needs < 1 s; generous on a loaded shared machine


# ------------------------------------------------------------------ through the collator
@pytest.fixture(scope="module")
def collator_parts():
    base = train_bpe(["the cat sat on the mat", "What is it? A cat."] * 40, vocab_size=360)
    s = tokenization.get_strategy("smolvlm-256m", do_split=False)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        n_img = int(rng.integers(0, 3))
        ims = [Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)) for _ in range(n_img)]
        rows.append({"id": f"r{i}", "images": ims, "turns": [
            {"role": "user", "content": "What is it? " * int(rng.integers(1, 6)) + str(i)}, {"role": "assistant", "content": "A cat." * (1 + i % 3)}]})
    return s, base, rows


@pytest.mark.parametrize("method", P.PACKERS)
def test_collator_packs_whole_samples(collator_parts, method):
    s, base, rows = collator_parts
    plain = SmolVLMCollator(s, base)
    samples = plain.encode_many(rows)
    col = SmolVLMCollator(s, base, max_length=400, packing=method, max_images_per_pack=3)
    batch = col(rows)
    L = 400
    assert batch["input_ids"].shape[1] == L and set(batch) >= {"position_ids", "subsequence_ids", "pixel_values"}
    seen = []
    for p in range(batch["input_ids"].shape[0]):
        seq = batch["subsequence_ids"][p]
        pos = batch["position_ids"][p]
        n_sub = int(seq.max())
        tiles = 0
        for k in range(1, n_sub + 1):
            where = (seq == k).nonzero().flatten()
            assert (where == torch.arange(where[0], where[0] + where.numel())).all()  # contiguous
            assert torch.equal(pos[where], torch.arange(where.numel()))  # positions restart
            ids = batch["input_ids"][p, where].numpy()
            match = [i for i, smp in enumerate(samples) if np.array_equal(smp.input_ids, ids)]
            assert match, "a packed sample equals one unpacked sample, uncut"
            assert np.array_equal(batch["labels"][p, where].numpy(), samples[match[0]].labels)
            seen.append(match[0])
            tiles += samples[match[0]].tiles.shape[0]
        assert int(batch["pixel_attention_mask"][p, :, 0, 0].sum()) == tiles
        assert tiles <= 3
        assert (batch["labels"][p][seq == 0] == IGNORE_INDEX).all()
        assert (batch["attention_mask"][p] == (seq > 0).long()).all()
    assert sorted(seen) == list(range(len(rows)))
    st = col.report()["packing"]
    assert st["samples"] == len(rows) and 0 < st["efficiency"] <= 1
    assert st["tokens"] == sum(len(x) for x in samples)
