"""Turn finished runs into results.parquet, results.md and plots.

One row per grid point: the axis values, then every metric as mean and std
over seeds (``val_loss_mean``, ``val_loss_std`` ...) and ``n_seeds``. The
per-seed rows are kept in runs.parquet for anyone who wants their own
statistics.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

#: metric -> (column label in results.md, format)
METRICS: dict[str, tuple[str, str]] = {
    "exact_match": ("exact match", "{:.3f}"),
    "char_accuracy": ("char acc", "{:.3f}"),
    "val_loss": ("val loss", "{:.3f}"),
    "final_train_loss": ("train loss", "{:.3f}"),
    "mean_train_loss": ("loss AUC", "{:.3f}"),
    "visual_tokens": ("visual tok/sample", "{:.0f}"),
    "seq_len": ("seq len", "{:.0f}"),
    "samples_per_s": ("samples/s", "{:.1f}"),
    "peak_rss_mb": ("peak RSS MB", "{:.0f}"),
    "rss_growth_mb": ("RSS growth MB", "{:.0f}"),
    "cuda_peak_mb": ("CUDA peak MB", "{:.0f}"),
    "wall_s": ("wall s", "{:.0f}"),
}


def runs_frame(results: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """One row per run: id, point, seed, axis values (as strings, for stable typing) and metrics."""
    rows = []
    for r in results:
        row = {"experiment": r.get("experiment", ""), "run_id": r["run_id"], "point_id": r["point_id"], "seed": int(r["settings"]["seed"])}
        for k, v in r["axis_values"].items():
            row[f"axis.{k}"] = json.dumps(v) if not isinstance(v, str) else v
        for k in METRICS:
            v = r["metrics"].get(k)
            row[k] = float(v) if v is not None else None
        rows.append(row)
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows, infer_schema_length=None)


def aggregate(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean and sample std over seeds per grid point (std is null for one seed), in grid order."""
    if runs.is_empty():
        return runs
    axis_cols = [c for c in runs.columns if c.startswith("axis.")]
    metric_cols = [c for c in METRICS if c in runs.columns]
    order = runs.select("point_id").unique(maintain_order=True).with_row_index("_order")
    aggs = [pl.len().alias("n_seeds")]
    for c in metric_cols:
        aggs += [pl.col(c).mean().alias(f"{c}_mean"), pl.col(c).std().alias(f"{c}_std")]
    grouped = runs.group_by(["experiment", "point_id", *axis_cols]).agg(aggs)
    return grouped.join(order, on="point_id").sort("_order").drop("_order")


def _axis_value(text: str) -> Any:
    """Axis values are stored as JSON text in the frames (so one column can hold ints, bools or strings)."""
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _fmt(mean: Any, std: Any, fmt: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = fmt.format(mean)
    if std is not None and not (isinstance(std, float) and math.isnan(std)):
        text += " ± " + fmt.format(std)
    return text


def markdown_table(agg: pl.DataFrame) -> str:
    """results.md's tables, one per experiment: its axis columns, then 'mean ± std' per metric that has any value."""
    if agg.is_empty():
        return "(no finished runs)\n"
    experiments = agg["experiment"].unique(maintain_order=True).to_list()
    out = []
    for exp in experiments:
        part = agg.filter(pl.col("experiment") == exp)
        axis_cols = [c for c in part.columns if c.startswith("axis.") and part[c].drop_nulls().len() > 0]
        metrics = [m for m in METRICS if f"{m}_mean" in part.columns and part[f"{m}_mean"].drop_nulls().len() > 0]
        header = [c[5:] for c in axis_cols] + ["seeds"] + [METRICS[m][0] for m in metrics]
        if len(experiments) > 1:
            out.append(f"### {exp}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for row in part.iter_rows(named=True):
            cells = [str(row[c]) for c in axis_cols] + [str(row["n_seeds"])]
            cells += [_fmt(row[f"{m}_mean"], row[f"{m}_std"], METRICS[m][1]) for m in metrics]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_loss_curves(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Training loss per step for every run (EMA-smoothed), validation points as dots; one panel per experiment,
    one colour per grid point, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = list(dict.fromkeys(r.get("experiment", "") for r in results)) or [""]
    ncols = min(2, len(experiments))
    nrows = -(-len(experiments) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7 * ncols, 4.2 * nrows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, exp in zip(axes.flat, experiments):
        colors: dict[str, Any] = {}
        for r in results:
            curve = r.get("loss_curve") or []
            if r.get("experiment", "") != exp or not curve:
                continue
            pid = r["point_id"]
            first = pid not in colors
            if first:
                colors[pid] = cmap(len(colors) % 10)
            steps = np.array([c[0] for c in curve], dtype=float)
            loss = np.array([c[1] for c in curve], dtype=float)
            label = ", ".join(f"{k}={v}" for k, v in r["axis_values"].items()) or "base"
            ax.plot(steps, _ema(loss, 0.9), color=colors[pid], lw=1.2, alpha=0.9, label=label if first else None)
            val = r.get("val_curve") or []
            if val:
                ax.plot([v[0] for v in val], [v[1] for v in val], "o", color=colors[pid], ms=3)
        ax.set_title(exp, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("answer-token loss (EMA 0.9); dots: validation", fontsize=8)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if colors:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(experiments):]:
        ax.axis("off")
    fig.subplots_adjust(left=0.09 / ncols, right=1 - 0.02 / ncols, bottom=0.1 / nrows, top=1 - 0.06 / nrows, wspace=0.25, hspace=0.35)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ema(x: np.ndarray, beta: float) -> np.ndarray:
    """Bias-corrected exponential moving average (a short recurrence; curves are a few thousand points)."""
    out = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc = beta * acc + (1 - beta) * v
        out[i] = acc / (1 - beta ** (i + 1))
    return out


def plot_accuracy_vs_tokens(agg: pl.DataFrame, path: Path) -> None:
    """Held-out accuracy (mean ± std over seeds) against visual tokens per sample, and against whole-sequence length
    (positional markers and intro text change the second without touching the first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    if not agg.is_empty():
        axis_cols = [c for c in agg.columns if c.startswith("axis.")]
        from ablations.grid import short_label

        labels = []
        for row in agg.iter_rows(named=True):
            text = " ".join(short_label(c[5:], _axis_value(row[c])) for c in axis_cols if row[c] is not None) or "base"
            labels.append(f"{row['experiment']}: {text}" if agg["experiment"].n_unique() > 1 else text)
        for ax, xcol, xlabel in ((axes[0], "visual_tokens_mean", "visual tokens per sample"),
                                 (axes[1], "seq_len_mean", "sequence length (tokens per sample)")):
            x = agg[xcol].to_numpy()
            for metric, marker in (("char_accuracy", "o"), ("exact_match", "s")):
                y = agg[f"{metric}_mean"].to_numpy()
                err = agg[f"{metric}_std"].fill_null(0.0).to_numpy()
                ax.errorbar(x, y, yerr=err, fmt=marker, capsize=3, alpha=0.8, label=metric.replace("_", " "))
            seen: dict[tuple[float, float], int] = {}
            for xi, yi, label in zip(x, agg["char_accuracy_mean"].to_numpy(), labels):
                key = (round(float(xi), 1), round(float(yi), 2))
                offset = seen.get(key, 0)
                seen[key] = offset + 1
                ax.annotate(label, (xi, yi), fontsize=6, xytext=(4, 4 - 9 * offset), textcoords="offset points")
            ax.margins(x=0.12)
            finite = x[np.isfinite(x)]
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 8:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (greedy decoding)")
    axes[0].set_ylim(-0.02, 1.05)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.11, top=0.96, wspace=0.08)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(out_dir: Path, results: Sequence[dict[str, Any]], header: str, plots: bool = True) -> pl.DataFrame:
    """results.parquet, runs.parquet, results.md and (with ``plots``) the two PNGs; returns the aggregated frame."""
    runs = runs_frame(results)
    agg = aggregate(runs)
    if not runs.is_empty():
        runs.write_parquet(out_dir / "runs.parquet")
        agg.write_parquet(out_dir / "results.parquet")
    (out_dir / "results.md").write_text(header.rstrip() + "\n\n" + markdown_table(agg))
    if plots:
        plot_loss_curves(results, out_dir / "loss_curves.png")
        plot_accuracy_vs_tokens(agg, out_dir / "accuracy_vs_visual_tokens.png")
    return agg
