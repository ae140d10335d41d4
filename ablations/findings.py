"""findings.md: the paper's findings tested by paired comparisons, with cost next to quality.

A grid's ``findings`` section names, per finding, one experiment, a metric, the
arm the paper favours, the arm it is compared with, and the side the paper
predicts. For each, the report gives the metric per arm, the paired difference
over seeds with its bootstrap 95% interval and the verdict with its reason
(:mod:`ablations.stats`), the cost of each arm (visual tokens per sample,
sequence length, samples/s, peak memory), and a plot with the two arms'
learning curves side by side, so a plateau is visible. It is written whatever
the outcome, and rewritten after every run, so an interrupted grid still
reports what finished (the missing seeds make a finding inconclusive).
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ablations.grid import Finding, Grid
from ablations.report import METRICS, _ema
from ablations.stats import MIN_PAIRS, compare

#: cost columns of every finding, in order (CUDA peak only where a run had one)
COST = ("visual_tokens", "seq_len", "samples_per_s", "peak_rss_mb", "rss_growth_mb", "cuda_peak_mb", "wall_s")
#: bootstrap settings, fixed so that the same runs always give the same report
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def _matches(record: dict[str, Any], experiment: str, values: dict[str, Any]) -> bool:
    av = record.get("axis_values") or {}
    return record.get("experiment") == experiment and all(k in av and av[k] == v for k, v in values.items())


def arm_runs(results: Sequence[dict[str, Any]], finding: Finding, side: str) -> dict[int, dict[str, Any]]:
    """The finished runs of one arm of a finding, by seed."""
    values = getattr(finding, side)
    return {int(r["settings"]["seed"]): r for r in results if _matches(r, finding.experiment, values)}


def _label(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items())


def _metric(runs: dict[int, dict[str, Any]], name: str) -> dict[int, float]:
    out = {}
    for seed, r in runs.items():
        v = r["metrics"].get(name)
        if v is not None and math.isfinite(float(v)):
            out[seed] = float(v)
    return out


def _mean_std(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    text = fmt.format(float(np.mean(values)))
    if len(values) > 1:
        text += " ± " + fmt.format(float(np.std(values, ddof=1)))
    return text


def evaluate(results: Sequence[dict[str, Any]], finding: Finding) -> dict[str, Any]:
    """One finding's numbers: per-arm metric values by seed, the paired comparison, and per-arm cost."""
    arm, base = arm_runs(results, finding, "arm"), arm_runs(results, finding, "baseline")
    a, b = _metric(arm, finding.metric), _metric(base, finding.metric)
    paired = compare(a, b, finding.direction, resamples=RESAMPLES, seed=BOOTSTRAP_SEED)
    unlearned = _unlearned(arm, base, finding.learned or {})
    if unlearned and len(paired.seeds) >= MIN_PAIRS:
        paired = replace(paired, verdict="inconclusive", reason=unlearned)
    cost = {side: {c: _metric(runs, c) for c in COST} for side, runs in (("arm", arm), ("baseline", base))}
    return {
        "name": finding.name, "claim": finding.claim, "experiment": finding.experiment, "metric": finding.metric,
        "direction": finding.direction, "arm": finding.arm, "baseline": finding.baseline,
        "arm_values": a, "baseline_values": b, **paired.to_dict(), "cost": cost,
        "arm_runs": sorted(r["run_id"] for r in arm.values()), "baseline_runs": sorted(r["run_id"] for r in base.values()),
    }


def _unlearned(arm: dict[int, dict[str, Any]], base: dict[int, dict[str, Any]], learned: dict[str, float]) -> str:
    """Why neither arm counts as having learned the task ('' when one did, or when no threshold is set)."""
    if not arm or not base:
        return ""
    for metric, floor in learned.items():
        means = [float(np.mean(list(v.values()))) if v else float("nan") for v in (_metric(arm, metric), _metric(base, metric))]
        if not any(m >= floor for m in means if math.isfinite(m)):
            return (f"neither arm learned the task: mean {metric} {means[0]:.3f} (arm) and {means[1]:.3f} (baseline), "
                    f"both under {floor:g}; a difference between two arms that did not learn is not evidence")
    return ""


def _fmt_diff(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:+.4f}"


def findings_markdown(grid: Grid, evaluated: Sequence[dict[str, Any]], header: str) -> str:
    """The summary table, then one section per finding (claim, metric, difference, verdict, cost, curves)."""
    lines = [header.replace("# Ablation results:", "# Findings:", 1).rstrip(), ""]
    lines.append(
        f"Paired differences are `arm - baseline` per seed (same seed: same initialization and batch order); "
        f"the interval is a percentile bootstrap of their mean ({RESAMPLES} resamples, generator seed {BOOTSTRAP_SEED}). "
        "*reproduced*: the 95% interval excludes 0 on the side the paper predicts; *reversed*: on the other side; "
        f"*inconclusive*: it contains 0, or fewer than {MIN_PAIRS} seeds paired."
    )
    lines += ["", "| finding | metric | paper's arm | baseline | arm | baseline | difference | 95% interval | seeds | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for e in evaluated:
        fmt = METRICS[e["metric"]][1] if e["metric"] in METRICS else "{:.3f}"
        ci = "-" if not math.isfinite(e["low"]) else f"[{e['low']:+.4f}, {e['high']:+.4f}]"
        want = ">" if e["direction"] == "higher" else "<"
        lines.append(
            f"| {e['name']} | {e['metric']} (paper: {want} 0) | {_label(e['arm'])} | {_label(e['baseline'])} | "
            f"{_mean_std(list(e['arm_values'].values()), fmt)} | {_mean_std(list(e['baseline_values'].values()), fmt)} | "
            f"{_fmt_diff(e['mean'])} | {ci} | {len(e['seeds'])} | **{e['verdict']}** |"
        )
    counts = {v: sum(e["verdict"] == v for e in evaluated) for v in ("reproduced", "reversed", "inconclusive")}
    lines += ["", f"{counts['reproduced']} reproduced, {counts['reversed']} reversed, {counts['inconclusive']} inconclusive "
              f"of {len(evaluated)} findings.", ""]
    by_name = {f.name: f for f in grid.findings}
    for e in evaluated:
        f = by_name[e["name"]]
        want = "higher" if e["direction"] == "higher" else "lower"
        lines += [f"## {e['name']}", "", f"**Claim.** {e['claim'].strip()}", ""]
        lines.append(f"- experiment `{e['experiment']}`: paper's arm {_label(e['arm'])} against {_label(e['baseline'])}")
        lines.append(f"- metric: `{e['metric']}` ({METRICS.get(e['metric'], (e['metric'],))[0]}); the paper predicts the arm's is {want}")
        if e["seeds"]:
            per = ", ".join(f"s{s}: {d:+.4f}" for s, d in zip(e["seeds"], e["differences"]))
            lines.append(f"- paired differences (arm - baseline): {per}")
            lines.append(f"- mean difference {_fmt_diff(e['mean'])}, 95% bootstrap interval [{e['low']:+.4f}, {e['high']:+.4f}]")
        else:
            lines.append("- no seed has both arms finished")
        lines.append(f"- verdict: **{e['verdict']}**: {e['reason']}")
        if f.why.strip():
            lines.append(f"- design: {' '.join(f.why.split())}")
        if f.otherwise.strip() and e["verdict"] != "reproduced":
            lines.append(f"- what this scale cannot show, and what would: {' '.join(f.otherwise.split())}")
        lines += ["", "| arm | " + " | ".join(METRICS[c][0] for c in COST if _has(e, c)) + " |",
                  "|---|" + "---|" * sum(_has(e, c) for c in COST)]
        for side in ("arm", "baseline"):
            cells = [_mean_std(list(e["cost"][side][c].values()), METRICS[c][1]) for c in COST if _has(e, c)]
            lines.append(f"| {_label(e[side])} | " + " | ".join(cells) + " |")
        lines += ["", f"![{e['name']}](findings/{e['name']}.png)", ""]
    return "\n".join(lines)


def _has(e: dict[str, Any], cost: str) -> bool:
    return any(e["cost"][side][cost] for side in ("arm", "baseline")) or cost != "cuda_peak_mb"


def plot_finding(results: Sequence[dict[str, Any]], finding: Finding, e: dict[str, Any], path: Path) -> None:
    """Training loss per seed (EMA) of the baseline and the paper's arm in two panels side by side, same y scale;
    validation points as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True, sharey=True)  # same scales: a plateau compares
    cmap = plt.get_cmap("tab10")
    for ax, side in zip(axes, ("baseline", "arm")):
        runs = arm_runs(results, finding, side)
        for k, seed in enumerate(sorted(runs)):
            r = runs[seed]
            curve = r.get("loss_curve") or []
            if curve:
                steps = np.array([c[0] for c in curve], dtype=float)
                loss = np.maximum(np.array([c[1] for c in curve], dtype=float), 1e-6)
                ax.plot(steps, _ema(loss, 0.9), color=cmap(k % 10), lw=1.1, label=f"seed {seed}")
            val = r.get("val_curve") or []
            if val:
                ax.plot([v[0] for v in val], [max(v[1], 1e-6) for v in val], "o", color=cmap(k % 10), ms=3)
        title = "paper's arm" if side == "arm" else "baseline"
        ax.set_title(f"{title}: {_label(getattr(finding, side))}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if runs:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss (EMA 0.9); dots: validation", fontsize=8)
    fig.suptitle(f"{finding.name}: {e['verdict']} ({finding.metric} difference {_fmt_diff(e['mean'])})", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.86, wspace=0.06)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_findings(out_dir: Path, grid: Grid, results: Sequence[dict[str, Any]], header: str, plots: bool = True) -> list[dict]:
    """findings.md, findings.json and (with ``plots``) findings/<name>.png; returns the evaluated findings."""
    evaluated = [evaluate(results, f) for f in grid.findings]
    (out_dir / "findings.md").write_text(findings_markdown(grid, evaluated, header) + "\n")
    (out_dir / "findings.json").write_text(json.dumps(evaluated, indent=1, sort_keys=True, default=str) + "\n")
    if plots:
        (out_dir / "findings").mkdir(exist_ok=True)
        for f, e in zip(grid.findings, evaluated):
            plot_finding(results, f, e, out_dir / "findings" / f"{f.name}.png")
    return evaluated
