"""Train and evaluate one grid point, with checkpoints that make a killed run resumable.

A run directory holds ``config.json`` (written first), ``tokenizer.json``,
``checkpoint.pt`` (rewritten atomically every ``checkpoint_every`` steps and at
the end), ``predictions.jsonl`` and finally ``result.json``. ``result.json`` is
the done marker: a run that has it is skipped; a run with only a checkpoint
continues from the checkpoint's step with the same batches it would have seen,
because batch ``k`` is drawn from a generator seeded by (seed, k).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ablations.data import RunData
from ablations.grid import RunPoint, RunSettings
from ablations.metrics import PeakRSS, score_answers
from ablations.model import TinyVLM, count_parameters
from manifests.fsutil import atomic_write, atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
CONFIG = "config.json"


@dataclass(frozen=True)
class DeviceSpec:
    """Where and how a run trains: device, intra-op threads, autocast dtype (None: fp32)."""

    device: torch.device
    threads: int
    autocast: torch.dtype | None

    @property
    def kind(self) -> str:
        return self.device.type


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return os.cpu_count() or 1


def cpu_supports_bf16() -> bool:
    """bf16 autocast pays off only with native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


def resolve_device(name: str, precision: str, threads: int | None = None) -> DeviceSpec:
    """``cpu``/``cuda``/``cuda:N`` plus ``precision`` (auto|bf16|fp32) -> a DeviceSpec."""
    from manifests.errors import UserError

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda was asked for but torch sees no CUDA device", field="--device")
        dev = torch.device(name)
        use_bf16 = precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported())
    elif name == "cpu":
        dev = torch.device("cpu")
        use_bf16 = precision == "bf16" or (precision == "auto" and cpu_supports_bf16())
    else:
        raise UserError(f"unknown device {name!r} (cpu, cuda, cuda:N)", field="--device")
    return DeviceSpec(dev, threads or available_cores(), torch.bfloat16 if use_bf16 else None)


def lr_at(step: int, s: RunSettings) -> float:
    """Linear warmup then cosine decay to 10%: a pure function of the step, so resuming needs no scheduler state."""
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    span = max(1, s.steps - s.warmup)
    progress = min(1.0, (step - s.warmup) / span)
    return s.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """The samples of batch ``step``: independent of everything that happened before it."""
    rng = np.random.default_rng([seed, step, 0x5EED])
    return rng.choice(n, size=min(batch_size, n), replace=False)


def make_optimizer(model: TinyVLM, s: RunSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "embed" not in name and "pos" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, lr=s.lr, betas=(0.9, 0.95), fused=on_cuda)


def _autocast(dev: DeviceSpec):
    if dev.autocast is None:
        return torch.autocast(dev.kind, enabled=False)
    return torch.autocast(dev.kind, dtype=dev.autocast)


@torch.no_grad()
def validation_loss(model: TinyVLM, data: RunData, dev: DeviceSpec, batch_size: int) -> float:
    """Token-weighted completion loss over the whole validation split."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(data.val), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data.val)))
        batch = data.val.batch(idx).to(dev.device)
        with _autocast(dev):
            loss, _ = model(batch.input_ids, batch.pixels, batch.labels)
        n = int((batch.labels[:, 1:] != -100).sum())
        total += float(loss) * n
        count += n
    model.train()
    return total / max(1, count)


@torch.no_grad()
def greedy_eval(model: TinyVLM, data: RunData, dev: DeviceSpec, s: RunSettings) -> tuple[dict[str, float], list[dict]]:
    """Decode answers for the first ``eval_samples`` validation samples; exact match and character accuracy."""
    model.eval()
    n = min(s.eval_samples, len(data.val))
    preds: list[str] = []
    refs: list[str] = []
    for start in range(0, n, s.batch_size):
        idx = np.arange(start, min(start + s.batch_size, n))
        batch = data.val.batch(idx, for_generation=True).to(dev.device)
        with _autocast(dev):
            ids = model.generate(
                batch.input_ids, batch.attention_mask, batch.pixels, s.max_new_tokens, data.stop_ids
            )
        preds.extend(data.decode(row) for row in ids)
        refs.extend(batch.answers)
    model.train()
    scores = score_answers(preds, refs)
    rows = [{"reference": r, "prediction": p} for p, r in zip(preds, refs)]
    return scores, rows


def _save_checkpoint(path: Path, model: TinyVLM, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    payload = {"model": model.state_dict(), "optimizer": opt.state_dict(), **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def train_one(
    point: RunPoint,
    data_factory: Callable[[RunSettings, Path], RunData],
    model_factory: Callable[[RunSettings, RunData], TinyVLM],
    run_dir: Path,
    dev: DeviceSpec,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or finish) one run and return its result record; a finished run is read back, not retrained."""
    done = run_dir / RESULT
    if done.is_file():
        return json.loads(done.read_text())
    s = point.settings
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        run_dir / CONFIG,
        {
            "run_id": point.run_id, "point_id": point.point_id, "experiment": point.experiment,
            "axis_values": point.axis_values, "settings": s.model_dump(mode="json"), "task": point.task.model_dump(mode="json"),
        },
    )
    torch.set_num_threads(dev.threads)
    torch.manual_seed(s.seed)
    rss_start = release_memory()
    data = data_factory(s, run_dir)
    model = model_factory(s, data).to(dev.device)
    opt = make_optimizer(model, s)

    step, curve, val_curve = 0, [], []
    prior = {"train_s": 0.0, "wall_s": 0.0, "peak_rss": 0, "cuda_peak": 0, "samples": 0, "rss_start": rss_start}
    ckpt = run_dir / CHECKPOINT
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=dev.device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, curve, val_curve = state["step"], state["curve"], state["val_curve"]
        prior = state["prior"]
        log.info("%s: resuming at step %d", point.run_id, step)
        if progress:
            progress(f"{point.run_id}: resuming at step {step}/{s.steps}")
    if dev.kind == "cuda":
        torch.cuda.reset_peak_memory_stats(dev.device)

    wall0 = time.perf_counter()
    train_s = prior["train_s"]
    samples = prior["samples"]
    model.train()
    with PeakRSS() as rss:
        while step < s.steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, s)
            t0 = time.perf_counter()
            idx = batch_indices(s.seed, step, len(data.train), s.batch_size)
            batch = data.train.batch(idx).to(dev.device)
            with _autocast(dev):
                loss, _ = model(batch.input_ids, batch.pixels, batch.labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            value = float(loss.detach())
            if dev.kind == "cuda":
                torch.cuda.synchronize(dev.device)
            train_s += time.perf_counter() - t0
            samples += len(idx)
            step += 1
            if not math.isfinite(value):
                raise FloatingPointError(f"{point.run_id}: loss is {value} at step {step}; lower lr")
            curve.append((step, value))
            if s.eval_every and step % s.eval_every == 0 and step < s.steps:
                val_curve.append((step, validation_loss(model, data, dev, s.batch_size)))
            if step % s.checkpoint_every == 0 or step == s.steps:
                state = {
                    "step": step, "curve": curve, "val_curve": val_curve,
                    "prior": {
                        "train_s": train_s, "wall_s": prior["wall_s"] + time.perf_counter() - wall0,
                        "peak_rss": max(prior["peak_rss"], rss.peak), "samples": samples,
                        "rss_start": prior.get("rss_start", rss_start),
                        "cuda_peak": max(prior["cuda_peak"], _cuda_peak(dev)),
                    },
                }
                _save_checkpoint(ckpt, model, opt, state)
            if progress and (step % max(1, s.steps // 10) == 0 or step == s.steps):
                progress(f"{point.run_id}: step {step}/{s.steps} loss {value:.3f}")
        val_loss = validation_loss(model, data, dev, s.batch_size)
        val_curve.append((step, val_loss))
        scores, predictions = greedy_eval(model, data, dev, s)
    wall = prior["wall_s"] + time.perf_counter() - wall0
    with (run_dir / "predictions.jsonl").open("w") as fh:
        for row in predictions:
            fh.write(json.dumps(row) + "\n")
    tail = [v for _, v in curve[-max(1, len(curve) // 20):]]
    metrics = {
        "final_train_loss": float(np.mean(tail)) if tail else None,
        # the average over every step is the area under the loss curve: it separates runs that end at the same
        # loss but leave a plateau at different times
        "mean_train_loss": float(np.mean([v for _, v in curve])) if curve else None,
        "val_loss": val_loss,
        **scores,
        "visual_tokens": data.stats["visual_tokens"],
        "seq_len": data.stats["seq_len"],
        "samples_per_s": samples / train_s if train_s > 0 else None,
        "peak_rss_mb": max(prior["peak_rss"], rss.peak) / 2**20,
        "rss_growth_mb": (max(prior["peak_rss"], rss.peak) - prior.get("rss_start", rss_start)) / 2**20,
        "cuda_peak_mb": (max(prior["cuda_peak"], _cuda_peak(dev)) / 2**20) if dev.kind == "cuda" else None,
        "wall_s": wall,
        "train_s": train_s,
        "params": count_parameters(model),
        "train_samples": len(data.train),
        "val_samples": len(data.val),
    }
    result = {
        "run_id": point.run_id, "point_id": point.point_id, "experiment": point.experiment,
        "axis_values": point.axis_values, "settings": s.model_dump(mode="json"), "task": point.task.model_dump(mode="json"), "metrics": metrics, "loss_curve": curve, "val_curve": val_curve,
        "device": str(dev.device), "autocast": str(dev.autocast).replace("torch.", "") if dev.autocast else "fp32",
        "threads": dev.threads, "data": data.describe(),
    }
    atomic_write_json(done, result)
    return result


def release_memory() -> int:
    """Free what earlier runs of this process left behind, so each run's peak RSS is its own; returns RSS now.

    Collected Python objects go back to glibc, and ``malloc_trim`` hands glibc's
    free pages back to the OS (Linux only; elsewhere this is only a gc pass).
    """
    import ctypes
    import gc

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return int(psutil.Process().memory_info().rss)


def _cuda_peak(dev: DeviceSpec) -> int:
    return int(torch.cuda.max_memory_allocated(dev.device)) if dev.kind == "cuda" else 0
