"""`smolcurate tokens`: what images, videos or a whole manifest cost under a tokenization strategy."""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from manifests.errors import UserError

PROMPT_HEAD = 120


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokens",
        help="plan images/videos (grid, tiles, tokens, prompt) or total a manifest's token budget",
        description="For each image or video: resized size, rows, cols, tiles, visual tokens and the prompt. "
        "With --manifest: token totals and a histogram of tokens per row.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="image or video files, or folders of them")
    p.add_argument("--preset", default="smolvlm-256m", help="smolvlm-256m | smolvlm-500m | smolvlm-2.2b | idefics3")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a strategy field, e.g. --set positional=string --set do_split=false (repeatable)")
    p.add_argument("--manifest", metavar="DIR", help="total the token budget of a manifest instead")
    p.add_argument("--tokenizer", metavar="FILE|HUB_ID", help="base tokenizer for exact counts (default: estimate)")
    p.add_argument("--train-tokenizer", metavar="OUT",
                   help="with --manifest: train a byte-level BPE on its text, save it to OUT and count with it")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of --train-tokenizer (default 8192)")
    p.add_argument("--full-prompt", action="store_true", help="print whole prompts instead of their head")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_run)


def _strategy(args: argparse.Namespace):
    from tokenization.strategy import get_strategy, parse_assignments

    return get_strategy(args.preset, **parse_assignments(args.overrides))


def _tokenizer(args: argparse.Namespace) -> Any:
    from tokenization.base_tokenizer import load_tokenizer, save_tokenizer, train_from_manifest

    if args.train_tokenizer:  # _run has checked that --manifest is given
        tok = train_from_manifest(args.manifest, vocab_size=args.vocab_size)
        path = save_tokenizer(tok, args.train_tokenizer)
        print(f"trained a {tok.get_vocab_size()}-token BPE, saved to {path}", file=sys.stderr)
        return tok
    return load_tokenizer(args.tokenizer) if args.tokenizer else None


def _run(args: argparse.Namespace) -> int:
    strategy = _strategy(args)
    if args.manifest:
        return _manifest(args, strategy)
    if not args.paths:
        raise UserError("give image/video paths or --manifest DIR", field="tokens")
    if args.train_tokenizer:
        raise UserError("needs --manifest to train on", field="--train-tokenizer")
    return _files(args, strategy)


# ---- files ---------------------------------------------------------------------------------
def _expand(paths: list[str]) -> list[Path]:
    from media import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))
        else:
            out.append(p)
    return out


def _head(prompt: str, full: bool, image_token: str = "<image>") -> str:
    """The prompt with runs of the image token written as ``<image>*64``, cut to its head when long."""
    if full:
        return prompt
    run = re.compile(f"(?:{re.escape(image_token)}){{2,}}")
    compact = run.sub(lambda m: f"{image_token}*{len(m.group(0)) // len(image_token)}", prompt)
    return compact if len(compact) <= PROMPT_HEAD else compact[:PROMPT_HEAD] + "..."


def plan_file(path: Path, strategy: Any, counter: Any, full_prompt: bool = False) -> dict[str, Any]:
    """The plan of one image or video file (header/metadata probes only, no full decode)."""
    from media import VIDEO_EXTENSIONS, MediaError, image_info, probe_video

    if path.suffix.lower() in VIDEO_EXTENSIONS:
        meta = probe_video(path)
        from media.scenes import decodable_frames

        # a header can overstate the frames (a truncated AVI): one seek to its claimed end tells
        try:
            true = decodable_frames(path, meta["fps"], meta["frames"]) if meta["frames"] > 1 else meta["frames"]
        except MediaError:  # a broken tail: plan on the header, as the decoders will fail there anyway
            true = meta["frames"]
        if 0 < true < meta["frames"]:
            meta = {**meta, "frames": true, "duration": true / meta["fps"]}
        plan = strategy.plan_video(meta["frames"], meta["fps"], meta["duration"] or None)
        prompt = plan.prompt
        d = {"path": str(path), "kind": "video", "width": meta["width"], "height": meta["height"],
             "fps": round(meta["fps"], 3), "frames": meta["frames"], "duration": round(plan.duration, 3),
             "sampled": len(plan.indices), "kept_frames": plan.frames, "tiles": plan.frames,
             "visual_tokens": plan.image_tokens, "indices": list(plan.indices)}
    else:
        info = image_info(path)
        plan = strategy.plan_image(info.width, info.height)
        prompt = strategy.image_prompt(plan.rows, plan.cols)
        d = {"path": str(path), "kind": "image", "width": info.width, "height": info.height,
             "resized": list(plan.resized), "size": list(plan.size), "rows": plan.rows, "cols": plan.cols,
             "tiles": plan.tiles, "visual_tokens": plan.image_tokens}
    d["seq_len"] = counter.count(prompt)
    d["seq_len_exact"] = counter.exact
    d["prompt_chars"] = len(prompt)
    d["prompt"] = _head(prompt, full_prompt, strategy.image_token)
    return d


def _format_file(d: dict[str, Any], style: str) -> str:
    approx = "" if d["seq_len_exact"] else "~"
    if d["kind"] == "video":
        line = (f"{d['path']}: video {d['width']}x{d['height']} {d['fps']} fps, {d['frames']} frames, {d['duration']} s -> "
                f"{d['sampled']} sampled, {d['kept_frames']} frames of one tile, {d['visual_tokens']} image tokens, "
                f"{approx}{d['seq_len']} tokens ({style})")
    else:
        grid = f"{d['rows']}x{d['cols']} grid" if d["rows"] else "not split"
        line = (f"{d['path']}: image {d['width']}x{d['height']} -> resized {d['resized'][0]}x{d['resized'][1]}, "
                f"{d['size'][0]}x{d['size'][1]}, {grid}, {d['tiles']} tiles, {d['visual_tokens']} image tokens, "
                f"{approx}{d['seq_len']} tokens ({style})")
    return f"{line}\n  prompt ({d['prompt_chars']} chars): {d['prompt']!r}"


def _files(args: argparse.Namespace, strategy: Any) -> int:
    from media import MediaError
    from tokenization.counting import Counter

    counter = Counter(strategy, _tokenizer(args))
    files = _expand(args.paths)
    if not files:
        raise UserError("no image or video files found", field="paths")
    results, failed = [], 0
    for path in files:
        try:
            d = plan_file(path, strategy, counter, args.full_prompt)
        except (MediaError, UserError) as exc:
            failed += 1
            print(f"smolcurate: error: {path}: {exc}", file=sys.stderr)
            continue
        results.append(d)
        if not args.json:
            print(_format_file(d, strategy.positional))
    if args.json:
        print(json.dumps({"strategy": strategy.to_dict(), "files": results}, indent=2))
    return 2 if failed else 0


# ---- manifest --------------------------------------------------------------------------------
def histogram(values: np.ndarray) -> list[dict[str, int]]:
    """Rows per power-of-two bucket of tokens: [0], [1, 2), [2, 4), ..."""
    values = np.asarray(values, dtype=np.int64)
    if values.size == 0:
        return []
    top = int(values.max())
    edges = [0, 1] + [1 << k for k in range(1, max(1, math.ceil(math.log2(top + 1))) + 1)]
    edges = sorted(set(edges))
    if edges[-1] <= top:
        edges.append(edges[-1] * 2)
    counts = np.histogram(values, bins=edges)[0]
    return [{"lo": edges[i], "hi": edges[i + 1], "rows": int(c)} for i, c in enumerate(counts)]


def manifest_budget(path: str, strategy: Any, tokenizer: Any = None) -> dict[str, Any]:
    """Totals, per-modality totals and a histogram of tokens per row of a manifest."""
    import pyarrow.compute as pc

    from manifests.reader import open_manifest
    from tokenization.budget import token_counts

    manifest = open_manifest(path)
    counts = token_counts(path, strategy, tokenizer)
    modality = manifest.table(columns=["modality"]).column("modality")
    out: dict[str, Any] = {"manifest": str(manifest.path), "rows": counts.num_rows, "exact": tokenizer is not None}
    out["totals"] = {c: int(pc.sum(counts.column(c)).as_py() or 0) for c in counts.column_names}
    by: dict[str, dict[str, int]] = {}
    mod = np.asarray(modality.to_numpy(zero_copy_only=False)) if counts.num_rows else np.array([], dtype=object)
    tok = {c: counts.column(c).to_numpy() for c in counts.column_names}
    for m in sorted(set(mod.tolist())):
        sel = mod == m
        by[m] = {"rows": int(sel.sum()), **{c: int(tok[c][sel].sum()) for c in tok}}
    out["by_modality"] = by
    out["histogram"] = histogram(tok["tokens"]) if counts.num_rows else []
    return out


def _format_manifest(d: dict[str, Any], strategy: Any) -> str:
    est = "exact" if d["exact"] else "estimated text"
    t = d["totals"]
    lines = [
        f"{d['manifest']}: {d['rows']} rows under {strategy.name} ({strategy.positional} markers, {est})",
        f"  tokens: {t['tokens']:,} = visual {t['tokens_visual']:,} + text {t['tokens_text']:,}",
        "  by modality:",
    ]
    for m, v in d["by_modality"].items():
        lines.append(f"    {m:<12} {v['rows']:>9,} rows  {v['tokens']:>14,} tokens  (visual {v['tokens_visual']:,}, text {v['tokens_text']:,})")
    lines.append("  tokens per row:")
    peak = max((b["rows"] for b in d["histogram"]), default=0)
    for b in d["histogram"]:
        if not b["rows"]:
            continue
        bar = "#" * max(1, round(40 * b["rows"] / peak))
        label = "0" if b["hi"] == 1 else f"{b['lo']}-{b['hi'] - 1}"
        lines.append(f"    {label:>13} {b['rows']:>9,} {bar}")
    return "\n".join(lines)


def _manifest(args: argparse.Namespace, strategy: Any) -> int:
    if args.paths:
        raise UserError("give either PATHs or --manifest, not both", field="--manifest")
    d = manifest_budget(args.manifest, strategy, _tokenizer(args))
    if args.json:
        d["strategy"] = strategy.to_dict()
        print(json.dumps(d, indent=2))
    else:
        print(_format_manifest(d, strategy))
    return 0
