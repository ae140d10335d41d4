"""A curation job end to end: plan, run chunks on an engine (curation.engine.registry), resolve globally, write, commit."""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.engine.cutoffs import apply_cutoffs
from curation.engine.finalize import id_fixups, run_dedup, write_manifest
from curation.engine.registry import get_engine
from curation.engine.stages import stage_layout
from curation.enrich.checks import check_enrich, enrich_record, model_fingerprints
from curation.engine.staging import Staging
from curation.readers import SourcePlan, plan_source, spec_inputs
from curation.recipe import Recipe
from manifests import storage
from manifests.errors import UserError
from manifests.fsutil import canonical_hash
from manifests.writer import MANIFEST_FILE

Engine = Literal["ray", "local"]  # names in curation.engine.registry.ENGINES


@dataclass
class JobResult:
    out: Path | str  # a URI for an output on an object store
    engine: str
    workers: int
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_chunks: int = 0
    skipped: bool = False  # the output already held this job's manifest
    #: the stage layout as run: name, operators, pool size, CPUs/GPUs per worker, worker pids (Ray)
    stages: list[dict[str, Any]] = field(default_factory=list)
    ray_stats: str = ""  # Ray Data's per-stage execution stats (Ray engine)

    @property
    def kept(self) -> int:
        return sum(s["kept"] for s in self.sources.values())

    @property
    def read(self) -> int:
        return sum(s["read"] for s in self.sources.values())


def _progress(total: int, desc: str, unit: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=True if quiet else None, leave=False, dynamic_ncols=True,
                file=sys.stderr)


def _job_identity(recipe: Recipe, plans: list[SourcePlan]) -> dict[str, Any]:
    identity = {
        "recipe_hash": recipe.fingerprint(),
        "fingerprints": {p.name: p.fingerprint for p in plans},
        "chunks": sum(len(p.chunks) for p in plans),
    }
    if recipe.enrich:  # the weights behind the model paths (new weights: a new job, no stale resume)
        identity["models"] = model_fingerprints(recipe)
    return identity


def _committed_info(out: Path | str) -> dict[str, Any] | None:
    """The manifest.json committed in ``out`` (a folder or a URI), parsed; None when there is none or it is unreadable."""
    if storage.is_uri(out):
        raw = storage.read_bytes(storage.join(out, MANIFEST_FILE))
    else:
        mf = Path(out) / MANIFEST_FILE
        raw = mf.read_bytes() if mf.is_file() else None
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _complete(out: Path | str, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest.json already in ``out`` (a folder or a URI) when it records this very job, else None."""
    info = _committed_info(out)
    if info is None:
        return None
    job = (info.get("extra") or {}).get("job") or {}
    return info if job.get("identity") == canonical_hash(identity) else None


def run_job(
    recipe: Recipe,
    out_dir: str | os.PathLike,
    *,
    engine: Engine = "ray",
    workers: int | None = None,
    ray_address: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> JobResult:
    """Curate ``recipe`` into a manifest at ``out_dir``; resumable after a kill at any point."""
    t0 = time.perf_counter()
    remote = storage.is_uri(out_dir)
    out: Path | str
    if remote:  # an object store: the bucket, the credentials and write access are checked before anything runs
        out = os.fspath(out_dir).rstrip("/")
        storage.check_writable(out)
    else:
        out = Path(out_dir).resolve()
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} exists and is not a folder", field="--out")
    eng = get_engine(engine)
    if workers is not None and workers < 1:
        raise UserError("must be at least 1", field="--workers")

    plans = [plan_source(recipe, i) for i in range(len(recipe.sources))]
    identity = _job_identity(recipe, plans)
    done_info = _complete(out, identity)
    if done_info is not None and not overwrite:
        sources = {n: {"kind": s.get("kind"), "read": s["read"], "kept": s["kept"], "reasons": {}}
                   for n, s in done_info["sources"].items()}
        for d in done_info.get("drops", []):
            sources[d["source"]]["reasons"][(d["stage"], d["reason"])] = d["count"]
        return JobResult(out, engine, workers or 1, sources, time.perf_counter() - t0, skipped=True)
    if (storage.exists(storage.join(out, MANIFEST_FILE)) if remote else (Path(out) / MANIFEST_FILE).exists()) and not overwrite:
        raise UserError(f"{out} already holds a different manifest; pass --overwrite to replace it", field="--out")

    n_workers = eng.start(ray_address, workers)
    check_enrich(recipe, eng.gpus())  # model paths, head sizes, device: cuda: before anything is written
    stages = stage_layout(recipe)[0]
    if not remote:
        Path(out).mkdir(parents=True, exist_ok=True)
    staging = Staging(out)
    staging.prepare(identity, overwrite)
    specs: list[tuple[int, dict]] = []
    chunk_of: list[int] = []
    for p in plans:
        for spec in p.chunks:
            specs.append((len(specs), spec))
            chunk_of.append(p.index)
    finished = staging.finished()
    pending = [(k, s) for k, s in specs if k not in finished]
    inputs_pending = sum(spec_inputs(s) for _, s in pending)

    bar = _progress(inputs_pending, "curate", "input", quiet)
    kept = dropped = 0

    def on_done(counts: dict[str, Any]) -> None:
        nonlocal kept, dropped
        kept += counts["kept"]
        dropped += counts["dropped"]
        bar.update(counts.get("inputs", counts["read"]))
        bar.set_postfix(kept=kept, dropped=dropped, refresh=False)

    try:
        run_info = eng.run(recipe, staging, stages, pending, on_done)
    finally:
        bar.close()

    staging.pull()  # on an object store: the chunks the workers staged, into this process's scratch folder
    missing = [k for k, _ in specs if k not in staging.finished()]
    if missing:  # pragma: no cover - an engine returned without finishing (should raise instead)
        raise RuntimeError(f"{len(missing)} chunks did not finish (first: {missing[0]})")

    cutoffs = apply_cutoffs(recipe, staging, len(specs), chunk_of)  # global thresholds (top fraction per source)
    fixes = id_fixups(recipe, plans, staging, chunk_of)
    dedup_cfg = recipe.dedup_config()
    if dedup_cfg is not None:
        dbar = _progress(1, "dedup", "stage", quiet)
        dup = run_dedup(recipe, staging, len(specs), fixes, eng.map_fn())
        dbar.update(1)
        dbar.close()
    else:
        dup = None
    wbar = _progress(len(specs), "write", "chunk", quiet)
    extra = {
        "job": {"identity": canonical_hash(identity), "chunks": len(specs), "seed": recipe.seed},
        "engine": {"name": engine, "workers": n_workers,
                   "stages": [{k: v for k, v in st.items() if k != "pids"} for st in run_info["stages"]]},
    }
    if recipe.enrich:
        # score columns and their thresholds (cutoffs resolved from top fractions included), for histograms
        extra["enrich"] = enrich_record(recipe, cutoffs)
    if dedup_cfg is not None:
        # lets a later `against:` reuse this manifest's sig_* columns instead of re-hashing its media
        extra["dedup_signature"] = dedup_cfg.signature_fingerprint()
    try:
        sources = write_manifest(recipe, plans, staging, out, chunk_of, fixes, dup, extra, tick=lambda: wbar.update(1))
    finally:
        wbar.close()
    staging.clear()
    return JobResult(out, engine, n_workers, sources, time.perf_counter() - t0, resumed_chunks=len(finished),
                     stages=run_info["stages"], ray_stats=run_info.get("ray_stats", ""))


def run_recipe_mixture(recipe: Recipe, curated_out: str | os.PathLike, mix_out: str | os.PathLike | None = None,
                       *, overwrite: bool = False):
    """Apply the recipe's ``mixture:`` section to the manifest just curated (None when it has none).

    The mixture goes to ``mix_out``, by default a sibling folder ``<curated>-mixture``.
    """
    if recipe.mixture is None:
        return None
    from curation.mixing import build_mixture

    curated: Path | str
    target: Path | str
    if storage.is_uri(curated_out):  # on an object store: the sibling prefix <curated>-mixture
        curated = os.fspath(curated_out).rstrip("/")
        target = mix_out if mix_out and storage.is_uri(mix_out) else Path(mix_out) if mix_out else f"{curated}-mixture"
    else:
        curated = Path(curated_out).resolve()
        target = mix_out if mix_out and storage.is_uri(mix_out) else Path(mix_out) if mix_out else \
            curated.with_name(f"{curated.name}-mixture")
    if not overwrite:
        # a re-run of a finished job: the mixture already written from the same plan is kept as it is
        planned = build_mixture(recipe.mixture, target, inputs=[curated], dry_run=True)
        if _same_mixture(target, planned.provenance):
            planned.path = target
            return planned
    return build_mixture(recipe.mixture, target, inputs=[curated], overwrite=overwrite)


def _same_mixture(target: Path | str, record: dict[str, Any]) -> bool:
    """Whether ``target`` already holds a committed mixture with this very provenance record."""
    info = _committed_info(target)
    if info is None:
        return False
    stored = (info.get("extra") or {}).get("mixture")
    return json.dumps(stored, sort_keys=True, default=str) == json.dumps(
        json.loads(json.dumps(record, default=str)), sort_keys=True, default=str)


def format_summary(result: JobResult) -> str:
    """The table that closes a run: per source read / kept / dropped and the main drop reasons."""
    head = f"{'source':<16} {'kind':<10} {'read':>7} {'kept':>7} {'dropped':>8}  reasons"
    lines = [head, "-" * len(head)]
    for name, s in result.sources.items():
        reasons = sorted(s["reasons"].items(), key=lambda kv: (-kv[1], kv[0]))
        text = ", ".join(f"{st}/{rs} {n}" for (st, rs), n in reasons[:4]) + (" ..." if len(reasons) > 4 else "")
        dropped = s["read"] - s["kept"]
        lines.append(f"{name[:16]:<16} {str(s.get('kind') or ''):<10} {s['read']:>7} {s['kept']:>7} {dropped:>8}  {text}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<16} {'':<10} {result.read:>7} {result.kept:>7} {result.read - result.kept:>8}")
    how = "already complete" if result.skipped else f"{result.engine} engine, {result.workers} worker(s), {result.seconds:.1f}s"
    if result.resumed_chunks and not result.skipped:
        how += f", resumed after {result.resumed_chunks} finished chunks"
    lines.append(f"manifest: {result.out} ({how})")
    return "\n".join(lines)
