"""Multimodal sequence packing: which samples share one training sequence, and the per-sample bookkeeping.

Two packers, both capped by tokens (``capacity``) and by images per pack:

- :func:`pack_greedy`: SmolVLM's rule. Samples fill the current sequence in their
  order; a sample that does not fit starts the next one; no sample is ever cut.
  It is vectorized: every sample's "next pack start if a pack started here" is one
  ``searchsorted`` over the cumulative lengths (and images), and the chain of
  pack starts from sample 0 is followed by pointer doubling (log₂ n gathers),
  so a million lengths pack in well under a second with no Python loop per row.
- :func:`pack_knapsack`: nanoVLM's balanced greedy knapsack. Longest first, each
  sample goes into the least-loaded pack that still has room (tokens and
  images); packs start at ``ceil(total / capacity)`` and more open only when
  nothing fits. It balances the packs, at the price of reordering samples.

A sample longer than ``capacity`` cannot be packed without a cut: both packers
raise; the collator drops (or truncates) such samples before packing.
:func:`layout` turns packs into position ids that restart at every sample and
sub-sequence ids (1, 2, ... per sample, 0 on padding) for per-sample attention
(SmolVLM2's varlen packing); :func:`pack_stats` reports efficiency and image tokens per pack.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from manifests.errors import UserError

PACKERS = ("greedy", "knapsack")


def _check(lengths: np.ndarray, capacity: int, images: np.ndarray | None, max_images: int | None) -> None:
    if capacity < 1:
        raise UserError(f"pack capacity must be positive, got {capacity}", field="max_length")
    if lengths.size and lengths.min() < 1:
        raise UserError("sample lengths must be positive", field="lengths")
    if lengths.size and lengths.max() > capacity:
        i = int(lengths.argmax())
        raise UserError(f"sample {i} has {int(lengths[i])} tokens, more than the pack capacity {capacity}", field="max_length")
    if images is not None and max_images is not None and images.size and images.max() > max_images:
        i = int(images.argmax())
        raise UserError(f"sample {i} has {int(images[i])} images, more than max_images_per_pack={max_images}",
                        field="max_images_per_pack")


def pack_greedy(
    lengths: Sequence[int] | np.ndarray,
    capacity: int,
    images: Sequence[int] | np.ndarray | None = None,
    max_images: int | None = None,
) -> np.ndarray:
    """Pack id of every sample (int64, non-decreasing) under SmolVLM's in-order rule, vectorized."""
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    imgs = None if images is None else np.asarray(images, dtype=np.int64).reshape(-1)
    _check(lens, capacity, imgs, max_images)
    n = lens.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=cum[1:])
    # nxt[i]: first sample of the next pack when a pack starts at sample i (n = past the end)
    nxt = np.searchsorted(cum, cum[:-1] + capacity, side="right") - 1
    if imgs is not None and max_images is not None:
        icum = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(imgs, out=icum[1:])
        nxt = np.minimum(nxt, np.searchsorted(icum, icum[:-1] + max_images, side="right") - 1)
    nxt = np.maximum(nxt, np.arange(1, n + 1))  # progress is guaranteed by _check; keep it explicit
    jump = np.empty(n + 1, dtype=np.int64)
    jump[:-1] = nxt
    jump[-1] = n  # the sentinel maps to itself
    step = jump
    # starts[k] = nxt applied k times to 0. Two consecutive next-fit packs always overflow the token or the
    # image cap together, which bounds the pack count and so the number of doubling rounds
    bound = 2 * int(-(-int(cum[-1]) // capacity)) + 1
    if imgs is not None and max_images is not None:
        bound += 2 * int(-(-int(imgs.sum()) // max(1, max_images)))
    k = np.arange(min(n, bound), dtype=np.int64)
    starts = np.zeros(k.size, dtype=np.int64)
    bit = 0
    while (1 << bit) < k.size:
        sel = (k >> bit) & 1 == 1
        starts[sel] = jump[starts[sel]]
        jump = jump[jump]
        bit += 1
    if k.size < n and step[starts[-1]] < n:  # the bound did not hold (cannot happen; never return a wrong packing)
        return _greedy_loop(nxt, n)
    starts = starts[starts < n]  # the chain is strictly increasing until it hits the sentinel
    pack = np.zeros(n, dtype=np.int64)
    pack[starts[1:]] = 1
    return np.cumsum(pack)


def _greedy_loop(nxt: np.ndarray, n: int) -> np.ndarray:
    pack = np.zeros(n, dtype=np.int64)
    i = int(nxt[0])
    while i < n:
        pack[i] = 1
        i = int(nxt[i])
    return np.cumsum(pack)


def pack_knapsack(
    lengths: Sequence[int] | np.ndarray,
    capacity: int,
    images: Sequence[int] | np.ndarray | None = None,
    max_images: int | None = None,
) -> np.ndarray:
    """Pack id of every sample under nanoVLM's balanced greedy knapsack (longest first, least-loaded pack)."""
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    imgs = np.zeros_like(lens) if images is None else np.asarray(images, dtype=np.int64).reshape(-1)
    cap_img = max_images if max_images is not None else None
    _check(lens, capacity, imgs if images is not None else None, max_images)
    n = lens.size
    out = np.zeros(n, dtype=np.int64)
    if n == 0:
        return out
    k0 = int(-(-int(lens.sum()) // capacity))
    load = [0] * k0
    nimg = [0] * k0
    heap = [(0, k) for k in range(k0)]
    order = np.argsort(-lens, kind="stable")
    for i in order.tolist():
        li, ii = int(lens[i]), int(imgs[i])
        popped = []
        chosen = None
        while heap:
            ld, k = heapq.heappop(heap)
            if ld + li > capacity:  # the least loaded is full for this sample: so is every other
                popped.append((ld, k))
                break
            if cap_img is None or nimg[k] + ii <= cap_img:
                chosen = k
                break
            popped.append((ld, k))
        for item in popped:
            heapq.heappush(heap, item)
        if chosen is None:
            chosen = len(load)
            load.append(0)
            nimg.append(0)
        load[chosen] += li
        nimg[chosen] += ii
        out[i] = chosen
        heapq.heappush(heap, (load[chosen], chosen))
    # renumber packs by their first sample so pack ids are dense and deterministic
    used = np.unique(out)
    first = np.full(used.size, n, dtype=np.int64)
    np.minimum.at(first, np.searchsorted(used, out), np.arange(n))
    rank = np.empty(used.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(used.size)
    return rank[np.searchsorted(used, out)]


def pack(
    method: str, lengths: Sequence[int] | np.ndarray, capacity: int,
    images: Sequence[int] | np.ndarray | None = None, max_images: int | None = None,
) -> np.ndarray:
    """Dispatch to :func:`pack_greedy` or :func:`pack_knapsack` by name."""
    if method == "greedy":
        return pack_greedy(lengths, capacity, images, max_images)
    if method == "knapsack":
        return pack_knapsack(lengths, capacity, images, max_images)
    raise UserError(f"unknown packing {method!r} (known: {', '.join(PACKERS)})", field="packing")


def groups(pack_ids: np.ndarray) -> list[np.ndarray]:
    """Sample indices of each pack, in pack order and, within a pack, in sample order."""
    order = np.argsort(pack_ids, kind="stable")
    bounds = np.flatnonzero(np.diff(pack_ids[order])) + 1
    return np.split(order, bounds) if order.size else []


def layout(lengths: Sequence[int] | np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(position_ids, subsequence_ids) of one pack, each [width] int64, for samples of ``lengths`` laid end to end.

    Positions restart at 0 for every sample; sub-sequence ids are 1, 2, ... per sample and 0 on padding
    (padding positions are 0 too).
    """
    lens = np.asarray(lengths, dtype=np.int64)
    total = int(lens.sum())
    if total > width:
        raise ValueError(f"pack of {total} tokens does not fit width {width}")
    seq = np.zeros(width, dtype=np.int64)
    seq[:total] = np.repeat(np.arange(1, lens.size + 1), lens)
    starts = np.repeat(np.cumsum(lens) - lens, lens)
    pos = np.zeros(width, dtype=np.int64)
    pos[:total] = np.arange(total) - starts
    return pos, seq


def block_causal_mask(subsequence_ids: "np.ndarray | object"):
    """[P, 1, L, L] bool mask (torch): causal within each sample, nothing across samples or into padding."""
    import torch

    seq = torch.as_tensor(subsequence_ids)
    same = (seq[:, :, None] == seq[:, None, :]) & (seq[:, :, None] > 0)
    causal = torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool, device=seq.device).tril()
    return (same & causal)[:, None]


@dataclass(frozen=True)
class PackStats:
    """Packing quality of one set of packs."""

    packs: int
    samples: int
    tokens: int  # non-pad tokens
    slots: int  # packs * width
    image_tokens_per_pack: tuple[int, ...]

    @property
    def efficiency(self) -> float:
        """Share of non-pad tokens in the packed sequences."""
        return self.tokens / self.slots if self.slots else 0.0

    def to_dict(self) -> dict:
        per = np.asarray(self.image_tokens_per_pack, dtype=np.int64)
        return {
            "packs": self.packs, "samples": self.samples, "tokens": self.tokens, "slots": self.slots,
            "efficiency": round(self.efficiency, 4),
            "image_tokens_per_pack": {"mean": float(per.mean()) if per.size else 0.0, "max": int(per.max()) if per.size else 0},
        }


def pack_stats(
    lengths: Sequence[int] | np.ndarray, pack_ids: np.ndarray, width: int, image_tokens: Sequence[int] | np.ndarray | None = None
) -> PackStats:
    """Efficiency (non-pad share of ``packs x width``) and image tokens per pack."""
    lens = np.asarray(lengths, dtype=np.int64)
    n_packs = int(pack_ids.max()) + 1 if pack_ids.size else 0
    img = np.zeros_like(lens) if image_tokens is None else np.asarray(image_tokens, dtype=np.int64)
    per = np.bincount(pack_ids, weights=img, minlength=n_packs).astype(np.int64) if n_packs else np.zeros(0, np.int64)
    return PackStats(n_packs, int(lens.size), int(lens.sum()), n_packs * int(width), tuple(per.tolist()))
