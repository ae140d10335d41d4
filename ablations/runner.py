"""Run a grid: validate everything, prepare the task once, train each point, report.

Layout of ``--out``::

    grid.yaml                 copy of the grid that was run last
    data/<task>-<hash>/       generated task manifest (built-in tasks)
    tokenizers/bpe-<V>.json   base BPE trained on the task text, shared by runs
    runs/<run_id>/            config.json, tokenizer.json, checkpoint.pt, predictions.jsonl, result.json
    results.parquet, runs.parquet, results.md, loss_curves.png, accuracy_vs_visual_tokens.png
    findings.md, findings.json, findings/<name>.png   (grids with a ``findings`` section)

Everything that can be wrong with the grid (unknown axis, r not dividing the
patch grid, a manifest without usable rows, a missing backbone folder) raises
before the first training step.
"""
from __future__ import annotations

import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ablations.backbones import Backbones, build_model
from ablations.data import RunData, TaskSource, base_tokenizer, ensure_chat_tokens
from ablations.grid import Grid, RunPoint, RunSettings, TaskSpec, expand, load_grid, parse_overrides
from ablations.findings import write_findings
from ablations.report import write_report
from ablations.tasks import GENERATORS, generate_task, task_key
from ablations.train import resolve_device, train_one
from manifests.errors import RecipeError, UserError


@dataclass(frozen=True)
class AblationOptions:
    """Command-line choices that are about the machine, not the experiment."""

    device: str = "cpu"
    threads: int | None = None
    precision: str | None = None  # overrides the grid's precision when set
    vision: str | None = None
    lm: str | None = None
    freeze_lm: bool = False
    only: Sequence[str] | None = None
    overrides: Sequence[str] | None = None  # --set key=value

    def backbones(self) -> Backbones:
        return Backbones(
            vision=Path(self.vision).expanduser().resolve() if self.vision else None,
            lm=Path(self.lm).expanduser().resolve() if self.lm else None,
            freeze_lm=self.freeze_lm,
        )


def plan(grid_path: str | Path, opts: AblationOptions) -> tuple[Grid, Path, list[RunPoint]]:
    """Parse, expand and check a grid against the options; nothing is written."""
    grid, base_dir = load_grid(grid_path)
    points = expand(grid, parse_overrides(opts.overrides))
    grid.check_findings(points)
    if opts.only:
        points = [p for p in points if any(s in p.run_id for s in opts.only)]
        if not points:
            raise UserError(f"no run id contains any of {list(opts.only)}", field="--only")
    facts = opts.backbones().check()
    if "vision_patch" in facts:
        for p in points:
            if p.settings.patch != facts["vision_patch"]:
                raise RecipeError(
                    f"patch {p.settings.patch} differs from the --vision model's patch size {facts['vision_patch']}",
                    field="base.patch",
                )
    for p in points:
        if p.task.kind not in GENERATORS:
            manifest = _manifest_path(p.task, base_dir)
            if not (manifest / "manifest.json").is_file():
                raise RecipeError(f"{manifest} is not a manifest (no manifest.json)", field="task.manifest")
    return grid, base_dir, points


def _manifest_path(task: TaskSpec, base_dir: Path) -> Path:
    path = Path(task.manifest or "").expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def prepare_tasks(base_dir: Path, out: Path, points: Sequence[RunPoint]) -> dict[str, TaskSource]:
    """Generate (or locate) every task manifest and load its usable rows, once per distinct task, before any training."""
    by_task: dict[str, list[RunPoint]] = {}
    for p in points:
        by_task.setdefault(task_key(p.task), []).append(p)
    sources: dict[str, TaskSource] = {}
    for key, group in by_task.items():
        task = group[0].task
        manifest = generate_task(task, base_dir, out / "data") if task.kind in GENERATORS else _manifest_path(task, base_dir)
        max_side = max(max(p.settings.longest_edge, p.settings.tile) for p in group)
        sources[key] = TaskSource.from_manifest(manifest, task.train, task.val, max_side=max_side)
    return sources


def run_grid(
    grid_path: str | Path,
    out: str | Path,
    opts: AblationOptions = AblationOptions(),
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Train every (unfinished) run of the grid and write the report; returns the output folder."""
    grid, base_dir, points = plan(grid_path, opts)
    resolve_device(opts.device, "fp32", opts.threads)  # a bad --device fails before any task data is generated
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid_path, out / "grid.yaml")
    backbones = opts.backbones()
    sources = prepare_tasks(base_dir, out, points)
    if progress:
        for key, src in sources.items():
            progress(f"task {key}: {src.info['train']} train / {src.info['val']} val samples ({src.path})")
        progress(f"{grid.name}: {len(points)} runs")

    threads_before = torch.get_num_threads()  # train_one sets the run's threads; leave the caller's as they were
    try:
        results: list[dict] = []
        trained: dict[str, dict] = {}
        for i, point in enumerate(points, 1):
            key = task_key(point.task)
            data_factory, model_factory = _factories(sources[key], out / "tokenizers" / key, backbones)
            dev = resolve_device(opts.device, opts.precision or point.settings.precision, opts.threads)
            twin = trained.get(run_hash(point))
            if twin is not None:  # same settings and task in another experiment: train once, report in both
                if progress:
                    progress(f"[{i}/{len(points)}] {point.run_id}: same run as {twin['run_id']}")
                results.append({**twin, "run_id": point.run_id, "point_id": point.point_id, "experiment": point.experiment,
                                "axis_values": point.axis_values, "same_as": twin["run_id"]})
            else:
                if progress:
                    progress(f"[{i}/{len(points)}] {point.run_id}")
                result = train_one(point, data_factory, model_factory, out / "runs" / point.run_id, dev, progress)
                trained[run_hash(point)] = result
                results.append(result)
            header = _header(grid, grid_path, sources, results)
            write_report(out, results, header, plots=i == len(points))
            if grid.findings:  # rewritten after every run, so a killed grid still leaves a report of what finished
                write_findings(out, grid, results, header, plots=i == len(points))
    finally:
        torch.set_num_threads(threads_before)
    return out


def _factories(source: TaskSource, tokenizer_dir: Path, backbones: Backbones):
    """How train_one builds a run's data and model (called only for runs that are not finished)."""

    def data_factory(s: RunSettings, run_dir: Path) -> RunData:
        if backbones.lm is not None:
            from tokenization.base_tokenizer import load_tokenizer

            base = ensure_chat_tokens(load_tokenizer(backbones.lm))
        else:
            base = base_tokenizer(source, s.vocab_size, tokenizer_dir)
        data = RunData(source, s, base)
        data.save_tokenizer(run_dir)
        return data

    def model_factory(s: RunSettings, data: RunData):
        return build_model(s, data.tokenizer.get_vocab_size(), data.image_token_id, backbones)

    return data_factory, model_factory


def run_hash(point: RunPoint) -> str:
    """The settings+task hash at the end of a run id: equal hashes mean identical runs."""
    return point.run_id.rsplit("-", 1)[1]


def _header(grid: Grid, grid_path: str | Path, sources: dict[str, TaskSource], results: list[dict]) -> str:
    first = results[0] if results else {}
    lines = [f"# Ablation results: {grid.name}", ""]
    if grid.description.strip():
        lines += [grid.description.strip(), ""]
    lines.append(f"- grid: `{grid_path}`")
    for key, src in sources.items():
        lines.append(f"- task `{key}`: {src.info['train']} train / {src.info['val']} validation samples")
        for name, desc in (src.info.get("sources") or {}).items():
            lines.append(f"  - {name}: {desc}")
    if first:
        lines.append(
            f"- device: {first.get('device')} ({first.get('autocast')}, {first.get('threads')} threads), "
            f"python {platform.python_version()}, {sys.platform}"
        )
    lines.append("- metrics: mean ± std over seeds; accuracy by greedy decoding on held-out samples")
    return "\n".join(lines)
