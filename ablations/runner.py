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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ablations.backbones import Backbones, build_model
from ablations.data import RunData, TaskSource, base_tokenizer, ensure_chat_tokens
from ablations.grid import Grid, RunPoint, RunSettings, TaskSpec, expand, load_grid, parse_overrides
from ablations.findings import write_findings
from ablations.parallel import SourceRef, resolve_jobs, threads_per_job, train_in_pool
from ablations.report import write_report
from ablations.tasks import GENERATORS, generate_task, task_key
from ablations.train import RESULT, DeviceSpec, resolve_device, train_one
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
    jobs: int | str | None = None  # --jobs: overrides the grid's ``jobs``

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

    jobs_asked = opts.jobs if opts.jobs is not None else grid.jobs
    firsts: dict[str, RunPoint] = {}  # same settings and task in another experiment: train once, report in both
    for p in points:
        firsts.setdefault(run_hash(p), p)
    unique = list(firsts.values())
    todo = [p for p in unique if not (out / "runs" / p.run_id / RESULT).is_file()]
    jobs = resolve_jobs(jobs_asked, opts.device, len(todo))
    threads = threads_per_job(jobs, opts.threads)
    devs = {p.run_id: resolve_device(opts.device, opts.precision or p.settings.precision, threads) for p in unique}
    if progress:
        skipped = len(unique) - len(todo)
        plan_line = (f"{jobs} at a time x {threads} thread{'s' if threads > 1 else ''}" if todo
                     else "nothing left to train")
        progress(f"{grid.name}: {len(points)} runs ({len(unique)} distinct, {skipped} finished before), {plan_line}")

    results: dict[str, dict] = {}
    started = time.perf_counter()

    def record(point: RunPoint, result: dict) -> None:
        for q in points:
            if run_hash(q) != run_hash(point):
                continue
            if q.run_id == result["run_id"]:
                results[q.run_id] = result
            else:
                results[q.run_id] = {**result, "run_id": q.run_id, "point_id": q.point_id, "experiment": q.experiment,
                                     "axis_values": q.axis_values, "same_as": result["run_id"]}

    def report(final: bool) -> None:
        ordered = [results[p.run_id] for p in points if p.run_id in results]
        header = _header(grid, grid_path, sources, ordered, resolve_jobs(jobs_asked, opts.device, len(unique)))
        write_report(out, ordered, header, plots=final)
        if grid.findings:  # rewritten after every run, so a killed grid still leaves a report of what finished
            write_findings(out, grid, ordered, header, plots=final)

    threads_before = torch.get_num_threads()  # train_one sets the run's threads; leave the caller's as they were
    try:
        waiting = {p.run_id for p in todo}
        for p in unique:
            if p.run_id not in waiting:
                record(p, train_one(p, *factories(sources[task_key(p.task)], out / "tokenizers" / task_key(p.task), backbones),
                                    out / "runs" / p.run_id, devs[p.run_id]))
        if jobs > 1:
            if backbones.lm is None:  # trained here once, so that workers only read it
                for p in todo:
                    key = task_key(p.task)
                    base_tokenizer(sources[key], p.settings.vocab_size, out / "tokenizers" / key)
            refs = {key: SourceRef.of(src, _task_of(points, key).train, _task_of(points, key).val) for key, src in sources.items()}
            keys = {p.run_id: task_key(p.task) for p in todo}
            finished = train_in_pool(todo, refs, keys, out, backbones, devs, jobs, progress)
        else:
            finished = _in_turn(todo, sources, out, backbones, devs, progress)
        try:
            for n, (point, result) in enumerate(finished, 1):
                record(point, result)
                if progress:
                    elapsed = time.perf_counter() - started
                    progress(f"[{n}/{len(todo)} done] {point.run_id} ({result['metrics']['wall_s']:.0f} s; "
                             f"{elapsed / 60:.1f} min so far)")
                if n < len(todo):
                    report(final=False)
        finally:
            finished.close()  # a failed run or Ctrl-C ends the pool's workers now, not at garbage collection
        report(final=True)
    finally:
        torch.set_num_threads(threads_before)
    return out


def _in_turn(todo: Sequence[RunPoint], sources: dict[str, TaskSource], out: Path, backbones: Backbones,
             devs: dict[str, DeviceSpec], progress: Callable[[str], None] | None) -> Iterator[tuple[RunPoint, dict]]:
    """Train the runs one after another in this process (``jobs: 1``, and every GPU grid by default)."""
    for i, p in enumerate(todo, 1):
        if progress:
            progress(f"[{i}/{len(todo)}] {p.run_id}")
        key = task_key(p.task)
        data_factory, model_factory = factories(sources[key], out / "tokenizers" / key, backbones)
        yield p, train_one(p, data_factory, model_factory, out / "runs" / p.run_id, devs[p.run_id], progress)


def _task_of(points: Sequence[RunPoint], key: str) -> TaskSpec:
    return next(p.task for p in points if task_key(p.task) == key)


def factories(source: TaskSource, tokenizer_dir: Path, backbones: Backbones):
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


def _header(grid: Grid, grid_path: str | Path, sources: dict[str, TaskSource], results: list[dict], jobs: int = 1) -> str:
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
            f"- device: {first.get('device')} ({first.get('autocast')}, {first.get('threads')} "
            f"thread{'s' if first.get('threads') != 1 else ''}"
            f"{f', {jobs} runs at a time' if jobs > 1 else ''}), "
            f"python {platform.python_version()}, {sys.platform}"
        )
    lines.append("- metrics: mean ± std over seeds; accuracy by greedy decoding on held-out samples")
    return "\n".join(lines)
