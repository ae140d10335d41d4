"""Collation throughput against transformers' SmolVLMProcessor on the same rows, and greedy packing speed, one run.

    python benchmarks/bench_collate.py [--preset smolvlm-256m] [--rows 48] [--batch 8] [--workers 2] [--rounds 2] [--quick]

1. Collated samples/s through a torch DataLoader (``--workers`` processes, the
   same rows, the same batch size) with ``SmolVLMCollator`` as ``collate_fn``,
   against a ``collate_fn`` that does what a transformers user writes:
   ``processor.apply_chat_template`` per row, then ``processor(text, images,
   padding=True, return_tensors="pt")`` (our side also builds the labels).
   The rows are real images of ../shared/realdata/images (or synthetic noise
   photos where that is absent), decoded once up front, with a two-turn
   conversation each. The first batches of both are compared for equality.
2. Greedy packing of 1M sample lengths (``tokenization.packing.pack_greedy``) in rows/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tokenization  # noqa: E402
from media import IMAGE_EXTENSIONS  # noqa: E402
from tokenization import packing  # noqa: E402
from tokenization.base_tokenizer import train_bpe  # noqa: E402
from tokenization.chat import SMOLVLM_CHAT_TEMPLATE, build_messages  # noqa: E402
from tokenization.collate import SmolVLMCollator  # noqa: E402

REALDATA = Path(os.environ.get("SMOLCURATE_REALDATA", REPO.parent / "shared" / "realdata"))
QUESTIONS = ["What is in the picture?", "Describe the image in detail.", "What colour dominates?"]
ANSWERS = ["A photo of something.", "It shows a scene with several objects in it.", "Mostly grey."]


def load_images(n: int) -> list[Image.Image]:
    out = []
    for p in sorted((REALDATA / "images").rglob("*")) if (REALDATA / "images").is_dir() else []:
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            im = Image.open(p)
            im.load()
        except Exception:
            continue
        if im.mode not in ("RGB", "L", "RGBA", "P", "LA"):
            continue
        out.append(im)
    if not out:
        rng = np.random.default_rng(0)
        for i in range(32):
            w, h = int(rng.integers(200, 1300)), int(rng.integers(200, 1000))
            out.append(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return [out[i % len(out)] for i in range(n)]


def make_rows(n: int) -> list[dict]:
    images = load_images(n)
    return [{"id": f"r{i}", "images": [im], "turns": [{"role": "user", "content": QUESTIONS[i % 3]},
                                                       {"role": "assistant", "content": ANSWERS[i % 3]}]}
            for i, im in enumerate(images)]


class ImageOnlyProcessor:
    """Built lazily so the script imports without transformers."""


def build_processor(strategy, base):
    from transformers import PreTrainedTokenizerFast
    from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
    from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor

    class Proc(SmolVLMProcessor):
        @classmethod
        def get_attributes(cls):
            return ["image_processor", "tokenizer"]  # the video processor needs torchvision

    fast = PreTrainedTokenizerFast(tokenizer_object=strategy.build_tokenizer(base), pad_token="<|endoftext|>")
    ip = SmolVLMImageProcessorPil(size={"longest_edge": strategy.longest_edge}, max_image_size={"longest_edge": strategy.tile})
    proc = Proc(ip, fast, None, image_seq_len=strategy.image_seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE)
    proc.video_processor = types.SimpleNamespace(num_frames=None, fps=None)
    return proc, fast


class ProcessorCollate:
    """What a transformers user writes as collate_fn (picklable for DataLoader workers)."""

    def __init__(self, proc) -> None:
        self.proc = proc

    def __call__(self, rows):
        texts = [self.proc.apply_chat_template(build_messages(r["turns"], None, len(r["images"]), 0)[0]) for r in rows]
        return self.proc(text=texts, images=[r["images"] for r in rows], padding=True, return_tensors="pt")


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def throughput(rows, collate, batch: int, workers: int) -> float:
    loader = DataLoader(Rows(rows), batch_size=batch, collate_fn=collate, num_workers=workers,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    t = time.perf_counter()
    n = 0
    for b in loader:
        n += b["input_ids"].shape[0]
    return n / (time.perf_counter() - t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="smolvlm-256m")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lengths", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (best kept)")
    ap.add_argument("--quick", action="store_true", help="32 rows, 200k lengths")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.lengths, args.rounds = 32, 200_000, 1
    s = tokenization.get_strategy(args.preset)
    base = train_bpe(QUESTIONS * 20 + ANSWERS * 20, vocab_size=400)
    rows = make_rows(args.rows)
    col = SmolVLMCollator(s, base)
    print(f"rows: {len(rows)} real images, preset {args.preset}, batch {args.batch}, {args.workers} DataLoader workers")
    try:
        proc, _ = build_processor(s, base)
    except ImportError as exc:
        proc = None
        print(f"transformers not available ({exc}); collator only")
    if proc is not None:
        ref, got = ProcessorCollate(proc)(rows[: args.batch]), col(rows[: args.batch])
        same = all(torch.equal(ref[k], got[k]) for k in ref)
        print(f"first batch identical to the processor's: {same}")
    # rounds alternate between the two sides, best of each, so a load change on a shared machine hits both
    ours = theirs = 0.0
    for _ in range(args.rounds):
        ours = max(ours, throughput(rows, col, args.batch, args.workers))
        if proc is not None:
            theirs = max(theirs, throughput(rows, ProcessorCollate(proc), args.batch, args.workers))
    print(f"collate  SmolVLMCollator      {ours:8.2f} samples/s (best of {args.rounds})")
    if proc is not None:
        print(f"collate  SmolVLMProcessor     {theirs:8.2f} samples/s | ratio {ours / theirs:.2f}x (target >= 2x)")
    lens = np.clip(np.random.default_rng(0).lognormal(6.5, 0.8, args.lengths).astype(np.int64), 1, 8192)
    packing.pack_greedy(lens[:1000], 8192)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        ids = packing.pack_greedy(lens, 8192)
        best = min(best, time.perf_counter() - t)
    st = packing.pack_stats(lens, ids, 8192)
    print(f"packing  greedy {args.lengths:,} lengths in {best * 1e3:.0f} ms: {args.lengths / best / 1e6:.2f}M rows/s "
          f"(target >= 1M), {st.packs:,} packs, efficiency {st.efficiency:.3f}")
    t = time.perf_counter()
    ids = packing.pack_knapsack(lens[:100_000], 8192)
    dt = time.perf_counter() - t
    print(f"packing  knapsack 100,000 lengths: {100_000 / dt / 1e6:.2f}M rows/s, "
          f"efficiency {packing.pack_stats(lens[:100_000], ids, 8192).efficiency:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
