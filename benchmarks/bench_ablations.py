"""Training throughput of the ablation model, per configuration, against transformers' SmolVLM at the same size.

The peer a user would otherwise pick for a small-model ablation is
``transformers.SmolVLMForConditionalGeneration`` built from a tiny config (same
vision width/depth, patch, tile, pixel-shuffle ratio, LM width/depth, vocabulary)
and trained on the very same batches (same token ids, labels and tiles). Both
are timed for the same number of optimizer steps (AdamW, forward + backward +
step) after warm-up, with and without bf16 autocast.

    .venv/bin/python benchmarks/bench_ablations.py [--steps 20] [--batch 16] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `smolcurate ablate` does; must precede importing torch

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ablations.backbones import Backbones, build_model  # noqa: E402
from ablations.data import RunData, TaskSource, base_tokenizer  # noqa: E402
from ablations.grid import RunSettings, TaskSpec  # noqa: E402
from ablations.tasks import generate_task  # noqa: E402
from ablations.train import batch_indices, cpu_supports_bf16  # noqa: E402

CONFIGS = [
    ("r=2 split learned", dict(pixel_shuffle=2, do_split=True, positional="learned")),
    ("r=4 split learned", dict(pixel_shuffle=4, do_split=True, positional="learned")),
    ("r=2 no-split learned", dict(pixel_shuffle=2, do_split=False, positional="learned")),
    ("r=2 split string", dict(pixel_shuffle=2, do_split=True, positional="string")),
]
BASE = dict(tile=64, patch=8, longest_edge=128, width=128, depth=2, heads=4, vision_width=96, vision_depth=2,
            vision_heads=4, vocab_size=384)


def hf_peer(s: RunSettings, vocab: int, image_token_id: int) -> torch.nn.Module:
    """transformers' SmolVLM with the sizes of our model, randomly initialized (nothing downloaded)."""
    from transformers import LlamaConfig, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.smolvlm.configuration_smolvlm import SmolVLMVisionConfig

    vision = SmolVLMVisionConfig(hidden_size=s.vision_width, intermediate_size=4 * s.vision_width,
                                 num_hidden_layers=s.vision_depth, num_attention_heads=s.vision_heads,
                                 image_size=s.tile, patch_size=s.patch)
    text = LlamaConfig(vocab_size=vocab, hidden_size=s.width, intermediate_size=int(s.width * 4 * 2 / 3),
                       num_hidden_layers=s.depth, num_attention_heads=s.heads, num_key_value_heads=s.heads,
                       max_position_embeddings=4096, tie_word_embeddings=True)
    cfg = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=s.pixel_shuffle,
                        image_token_id=image_token_id, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    return SmolVLMForConditionalGeneration(cfg)


def time_steps(step_fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step_fn(0)
    t0 = time.perf_counter()
    for k in range(steps):
        step_fn(k)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-peer", action="store_true", help="skip the transformers SmolVLM comparison")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-ablate-") as tmp:
        run(args, Path(tmp))


def run(args: argparse.Namespace, work: Path) -> None:
    spec = TaskSpec(kind="locate", train=256, val=16, width=128, height=128)
    source = TaskSource.from_manifest(generate_task(spec, REPO, work / "data"), 256, 16)
    precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if cpu_supports_bf16() else [])
    print(f"# bench_ablations: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}, batch {args.batch}, {args.steps} timed steps")
    print("| configuration | visual tok/sample | seq len | precision | ours samples/s | SmolVLM (transformers) samples/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name, overrides in CONFIGS:
        s = RunSettings(**BASE, **overrides, batch_size=args.batch)
        data = RunData(source, s, base_tokenizer(source, s.vocab_size, work / "tok"))
        vocab = data.tokenizer.get_vocab_size()
        cpu = torch.device("cpu")
        batches = [data.train.batch(batch_indices(0, k, len(data.train), args.batch)).to(cpu) for k in range(args.steps)]
        tiles = batches[0].pixels.shape[0] // args.batch
        for pname, dtype in precisions:
            ours = build_model(s, vocab, data.image_token_id, Backbones())
            opt = torch.optim.AdamW(ours.parameters(), lr=1e-3)

            def ours_step(k: int) -> None:
                b = batches[k]
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    loss, _ = ours(b.input_ids, b.pixels, b.labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            t_ours = time_steps(ours_step, args.steps)
            ours_sps = args.steps * args.batch / t_ours
            peer_cell, ratio_cell = "-", "-"
            if not args.no_peer:
                peer = hf_peer(s, vocab, data.image_token_id)
                popt = torch.optim.AdamW(peer.parameters(), lr=1e-3)

                def peer_step(k: int) -> None:
                    b = batches[k]
                    pv = b.pixels.view(args.batch, tiles, *b.pixels.shape[1:])
                    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                        out = peer(input_ids=b.input_ids, attention_mask=b.attention_mask, pixel_values=pv, labels=b.labels)
                    popt.zero_grad(set_to_none=True)
                    out.loss.backward()
                    popt.step()

                t_peer = time_steps(peer_step, args.steps)
                peer_sps = args.steps * args.batch / t_peer
                peer_cell, ratio_cell = f"{peer_sps:.1f}", f"{ours_sps / peer_sps:.2f}x"
            print(f"| {name} | {data.stats['visual_tokens']:.0f} | {data.stats['seq_len']:.0f} | {pname} | "
                  f"{ours_sps:.1f} | {peer_cell} | {ratio_cell} |", flush=True)


if __name__ == "__main__":
    main()
