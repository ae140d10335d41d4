"""Batched image-embedding throughput (curation.enrich.clip.ImageEmbedder) vs a plain transformers loop.

Both sides embed the same images with the same CLIP model and end with
L2-normalised image embeddings:

- **plain loop**: per image ``Image.open().convert("RGB")``, the model's
  ``CLIPImageProcessor`` (PIL backend), ``get_image_features`` on a batch of
  one, as a script written from the model card would;
- **ImageEmbedder**: what a curation job runs in its ``embed`` stage: a
  reduced decode (JPEG DCT scaling down to about the model's input side, from
  the media reference's recorded width/height), numpy preprocessing, and one
  forward pass per ``--batch`` images.

The embeddings are compared too (mean cosine between the two sides), since the
reduced decode resamples slightly differently from a full decode.

No weights are downloaded: by default the model is a randomly initialised CLIP
with ViT-B/32's vision tower (``--quick``: a 4-layer, 256-wide one); pass
``--model DIR`` for a local transformers CLIP folder. ``--device cuda`` runs
both sides on the GPU (ImageEmbedder then batches on the device; see
docs/models.md). Images: the real corpus's photos when present
(``--images DIR``), otherwise synthetic 1024x768 JPEGs.

    python benchmarks/bench_models.py --quick
    python benchmarks/bench_models.py --images /work/shared/realdata/images --batch 32
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def build_model(folder: Path, quick: bool) -> Path:
    """A random CLIP saved in transformers format (ViT-B/32 vision tower, or a small one with --quick)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from tests.enrich_fixtures import save_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    t = save_tokenizer(folder)
    if quick:
        vision = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)
    else:
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=t["vocab_size"], hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, pad_token_id=t["pad"],
                         bos_token_id=t["bos"], eos_token_id=t["eos"]),
        vision_config=dict(image_size=224, patch_size=32, **vision),
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224}, "resample": 3, "do_center_crop": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    }))
    return folder


def gather_images(images: str | None, n: int, tmp: Path) -> list[Path]:
    if images:
        found = sorted(p for p in Path(images).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        good = []
        from PIL import Image

        for p in found:
            try:
                with Image.open(p) as im:
                    im.convert("RGB").load()
                good.append(p)
            except Exception:  # noqa: BLE001 - the corpus holds broken files on purpose
                continue
        if good:
            return (good * (n // len(good) + 1))[:n]
    from curation.synth import photo_like

    out = []
    for i in range(n):
        p = tmp / f"photo_{i:04d}.jpg"
        photo_like(i, (1024, 768)).save(p, quality=90)
        out.append(p)
    return out


def plain_loop(model_dir: Path, paths: list[Path], device: str) -> tuple[float, np.ndarray]:
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = CLIPModel.from_pretrained(model_dir, local_files_only=True).eval().to(device)
    proc = CLIPImageProcessor.from_pretrained(model_dir, local_files_only=True)
    out = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for p in paths:
            img = Image.open(p).convert("RGB")
            px = proc(images=img, return_tensors="pt")["pixel_values"].to(device)
            feat = model.get_image_features(pixel_values=px)
            feat = getattr(feat, "pooler_output", feat)
            out.append(torch.nn.functional.normalize(feat.float(), dim=-1).cpu().numpy()[0])
    return time.perf_counter() - t0, np.stack(out)


def embedder(model_dir: Path, paths: list[Path], device: str, batch: int, threads: int) -> tuple[float, np.ndarray]:
    import pyarrow as pa

    from curation.enrich.clip import ImageEmbedder, embeddings
    from curation.recipe import parse_recipe
    import media as M

    r = parse_recipe({"sources": [{"name": "a", "kind": "images", "path": str(paths[0].parent)}],
                      "enrich": {"embed": {"model": str(model_dir), "batch_size": batch, "device": device,
                                           "num_cpus": threads, "score_text": False}}}, check_paths=False)
    op = ImageEmbedder(r.enrich["embed"], r)
    op.setup()
    refs = []
    for p in paths:  # what the image analyzer has recorded by the time the embed stage runs
        info = M.image_info(str(p))
        refs.append([{"uri": str(p), "kind": "image", "width": info.width, "height": info.height}])
    table = pa.table({"media": refs})
    t0 = time.perf_counter()
    out = op(table)
    dt = time.perf_counter() - t0
    emb, valid = embeddings(out)
    assert valid.all()
    return dt, emb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small model and 64 images (about two minutes loaded)")
    ap.add_argument("--model", help="a local transformers CLIP folder (default: a random ViT-B/32-sized one)")
    ap.add_argument("--images", help="folder of images (default: the real corpus's images, else synthetic JPEGs)")
    ap.add_argument("-n", type=int, default=None, help="images (default 64 quick, 128 full; a multiple of --batch avoids padded rows)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: all cores)")
    args = ap.parse_args(argv)
    import os

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no GPU visible", file=sys.stderr)
        return 2
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    n = args.n or (64 if args.quick else 128)
    images = args.images
    if images is None:
        default = REPO.parent / "shared" / "realdata" / "images"
        images = str(default) if default.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        tmp_p = Path(tmp)
        model_dir = Path(args.model) if args.model else build_model(tmp_p / "clip", args.quick)
        paths = gather_images(images, n, tmp_p)
        embedder(model_dir, paths[: min(8, len(paths))], args.device, args.batch, threads)  # warm-up
        t_ours, e_ours = embedder(model_dir, paths, args.device, args.batch, threads)
        t_plain, e_plain = plain_loop(model_dir, paths, args.device)
    agree = float(np.mean(np.einsum("nd,nd->n", e_ours, e_plain)))
    print(f"images: {len(paths)} ({'given folder' if args.images else images or 'synthetic 1024x768 JPEGs'}), "
          f"model: {'given' if args.model else ('quick random CLIP' if args.quick else 'random ViT-B/32 CLIP')}, "
          f"device: {args.device}, threads: {threads}, batch: {args.batch}")
    print(f"plain transformers loop : {len(paths) / t_plain:8.1f} img/s")
    print(f"ImageEmbedder (batched) : {len(paths) / t_ours:8.1f} img/s   ratio {t_plain / t_ours:.2f}x")
    print(f"mean cosine between the two sides' embeddings: {agree:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
