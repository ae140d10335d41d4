"""The findings grid: explicit points, findings sections, the full-sequence loss, findings.md, and resume."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ablations.data import IGNORE_INDEX, RunData, TaskSource, base_tokenizer
from ablations.findings import write_findings
from ablations.grid import RunSettings, TaskSpec, expand, load_grid, parse_grid
from ablations.runner import AblationOptions, plan, run_grid, run_hash
from ablations.tasks import generate_task
from manifests.cli import main as cli_main
from manifests.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ROOT / "ablations" / "grids" / "findings.yaml"
ONE_THREAD = AblationOptions(threads=1)
TINY = {"tile": 32, "patch": 8, "longest_edge": 64, "width": 32, "depth": 1, "heads": 2, "vision_width": 32,
        "vision_depth": 1, "vision_heads": 2, "batch_size": 4, "vocab_size": 300, "eval_samples": 4,
        "max_new_tokens": 6, "steps": 4, "checkpoint_every": 2, "warmup": 1}


def two_arms(**extra) -> dict:
    grid = {
        "name": "g", "task": {"kind": "locate", "train": 16, "val": 4, "width": 64, "height": 64}, "base": dict(TINY),
        "seeds": [0, 1],
        "experiments": [{"name": "ps", "points": [{"pixel_shuffle": 2, "steps": 4}, {"pixel_shuffle": 4, "steps": 5}]}],
        "findings": [{"name": "f3", "claim": "r=4 wins", "experiment": "ps", "metric": "val_loss", "direction": "lower",
                      "arm": {"pixel_shuffle": 4}, "baseline": {"pixel_shuffle": 2}}],
    }
    for key, value in extra.items():
        grid[key] = value
    return grid


# --------------------------------------------------------------------------- grid fields
def test_points_expand_in_order_and_change_two_settings_together():
    grid = parse_grid(two_arms())
    points = expand(grid)
    assert [p.run_id.rsplit("-", 1)[0] for p in points] == ["ps-r2-steps4-s0", "ps-r2-steps4-s1", "ps-r4-steps5-s0", "ps-r4-steps5-s1"]
    assert [(p.settings.pixel_shuffle, p.settings.steps) for p in points[::2]] == [(2, 4), (4, 5)]
    grid.check_findings(points)


@pytest.mark.parametrize(
    "change, message, field",
    [
        ({"points": [{"pixel_shufle": 2}]}, "unknown axis 'pixel_shufle'", "experiments[0]"),
        ({"points": [{"pixel_shuffle": 2}, {"steps": 3}]}, "every point sets the same fields", "experiments[0]"),
        ({"axes": {"pixel_shuffle": [2]}}, "use axes or points, not both", "experiments[0]"),
    ],
)
def test_bad_points_are_one_line_errors(change, message, field):
    raw = two_arms()
    raw["experiments"][0].update(change)
    with pytest.raises(RecipeError) as exc:
        parse_grid(raw)
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert (exc.value.field or "").startswith(field)


def test_a_bad_point_value_names_the_points_section():
    raw = two_arms()
    raw["experiments"][0]["points"] = [{"pixel_shuffle": 2, "steps": 0}, {"pixel_shuffle": 4, "steps": 5}]
    with pytest.raises(RecipeError) as exc:
        expand(parse_grid(raw))
    assert exc.value.field == "experiments.ps.points.steps"


@pytest.mark.parametrize(
    "change, field, message",
    [
        ({"experiment": "nope"}, "findings[0].experiment", "unknown experiment 'nope'"),
        ({"metric": "accuracy"}, "findings[0].metric", "unknown metric 'accuracy'"),
        ({"arm": {"pixel_shuffle": 3}}, "findings[0].arm", "matches 0 points"),
        ({"baseline": {}}, "findings[0].baseline", "matches 2 points"),
        ({"baseline": {"pixel_shuffle": 4}}, "findings[0].arm", "the same point"),
    ],
)
def test_findings_are_checked_against_the_points(change, field, message):
    raw = two_arms()
    raw["findings"][0].update(change)
    grid = parse_grid(raw)
    with pytest.raises(RecipeError) as exc:
        grid.check_findings(expand(grid))
    assert exc.value.field == field and message in str(exc.value)


def test_finding_fields_are_strict():
    raw = two_arms()
    raw["findings"][0]["direction"] = "up"
    with pytest.raises(RecipeError) as exc:
        parse_grid(raw)
    assert (exc.value.field or "").endswith("direction") and "findings" in exc.value.field
    raw = two_arms()
    raw["findings"][0]["metrc"] = "val_loss"
    with pytest.raises(RecipeError, match="metrc"):
        parse_grid(raw)


def test_loss_axis_rejects_unknown_values():
    raw = two_arms()
    raw["base"]["loss"] = "prompt"
    with pytest.raises(RecipeError) as exc:
        parse_grid(raw)
    assert (exc.value.field or "").startswith("base.loss")


def test_bad_finding_is_rejected_by_the_cli_before_any_data(tmp_path, capsys):
    raw = two_arms()
    raw["findings"][0]["metric"] = "accuracy"
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli_main(["ablate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "findings[0].metric" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the shipped grid
def test_shipped_findings_grid_covers_findings_3_to_6_with_fixed_seeds():
    grid, _ = load_grid(FINDINGS)
    points = expand(grid)
    grid.check_findings(points)
    names = {f.name for f in grid.findings}
    assert {"f3-pixel-shuffle", "f4-splitting", "f4-frame-averaging", "f5-positional", "f6-intro-outro",
            "f6-completion-loss"} <= names
    for exp in grid.experiment_list():
        seeds = exp.seeds if exp.seeds is not None else grid.seeds
        assert len(seeds) >= 5
    assert all(f.why.strip() for f in grid.findings)
    # shared baselines train once: 9 distinct configurations x 5 seeds
    assert len({run_hash(p) for p in points}) == 45
    # equal compute for finding 3: the r=4 arm has more steps
    ps = {p.settings.pixel_shuffle: p.settings.steps for p in points if p.experiment == "pixel-shuffle"}
    assert ps[4] > ps[2]


# --------------------------------------------------------------------------- full-sequence loss
@pytest.fixture(scope="module")
def read_source(tmp_path_factory) -> TaskSource:
    root = tmp_path_factory.mktemp("read")
    spec = TaskSpec(kind="read", train=8, val=4, width=64, height=32)
    return TaskSource.from_manifest(generate_task(spec, root, root / "data"), 8, 4)


def test_full_loss_labels_prompt_text_but_never_image_tokens_and_validation_stays_on_answers(read_source, tmp_path):
    settings = {k: v for k, v in TINY.items()}
    tok = base_tokenizer(read_source, 300, tmp_path)
    comp = RunData(read_source, RunSettings(**settings, loss="completion"), tok)
    full = RunData(read_source, RunSettings(**settings, loss="full"), tok)
    for c, f in zip(comp.train.encoded, full.train.encoded):
        assert np.array_equal(c.input_ids, f.input_ids) and c.prompt_len == f.prompt_len
        assert (c.labels[: c.prompt_len] == IGNORE_INDEX).all()
        labelled = f.labels != IGNORE_INDEX
        assert labelled[: f.prompt_len].sum() > 5  # the chat markers and the question are labels now
        assert not labelled[f.input_ids == full.image_token_id].any()
        answer = c.labels != IGNORE_INDEX
        assert np.array_equal(f.labels[answer], c.labels[answer])
    for c, f in zip(comp.val.encoded, full.val.encoded):
        assert np.array_equal(c.labels, f.labels)
    batch = full.train.batch([0, 1])
    assert int((batch.labels != IGNORE_INDEX).sum()) > int((comp.train.batch([0, 1]).labels != IGNORE_INDEX).sum())


# --------------------------------------------------------------------------- the report
def _fake_results(diffs: list[float]) -> list[dict]:
    out = []
    for arm, (r, steps) in enumerate(((2, 4), (4, 5))):
        for seed, d in enumerate(diffs):
            val = 1.0 - (d if arm else 0.0) + 0.01 * seed
            out.append({
                "run_id": f"ps-r{r}-s{seed}-x", "point_id": f"ps-r{r}", "experiment": "ps",
                "axis_values": {"pixel_shuffle": r, "steps": steps}, "settings": {"seed": seed},
                "metrics": {"val_loss": val, "visual_tokens": 20.0 * (5 - r), "seq_len": 60.0, "samples_per_s": 50.0,
                            "peak_rss_mb": 700.0, "rss_growth_mb": 50.0, "wall_s": 3.0, "cuda_peak_mb": None},
                "loss_curve": [[1, 2.0], [2, 1.5], [3, 1.2]], "val_curve": [[3, val]],
            })
    return out


@pytest.mark.parametrize("diffs, verdict", [([0.2, 0.3, 0.25], "reproduced"), ([-0.2, -0.3, -0.25], "reversed"),
                                            ([0.2, -0.3, 0.05], "inconclusive")])
def test_findings_report_from_constructed_runs(tmp_path, diffs, verdict):
    grid = parse_grid(two_arms(seeds=[0, 1, 2]))
    (e,) = write_findings(tmp_path, grid, _fake_results(diffs), "# Ablation results: g")
    assert e["verdict"] == verdict
    assert e["differences"] == pytest.approx([-d for d in diffs])  # arm r=4 minus baseline r=2 on val loss
    text = (tmp_path / "findings.md").read_text()
    assert text.startswith("# Findings: g")
    assert f"**{verdict}**" in text and "95% bootstrap interval" in text
    for col in ("visual tok/sample", "seq len", "samples/s", "peak RSS MB"):
        assert col in text
    assert "CUDA peak" not in text
    assert (tmp_path / "findings" / "f3.png").stat().st_size > 1000
    assert json.loads((tmp_path / "findings.json").read_text())[0]["verdict"] == verdict


@pytest.mark.parametrize("floor, verdict", [(0.5, "reproduced"), (0.9, "inconclusive")])
def test_a_finding_on_a_task_neither_arm_learned_is_inconclusive(tmp_path, floor, verdict):
    findings = copy.deepcopy(two_arms()["findings"])
    findings[0]["learned"] = {"exact_match": floor}
    grid = parse_grid(two_arms(seeds=[0, 1, 2], findings=findings))
    results = _fake_results([0.2, 0.3, 0.25])  # reproduced on val loss, every seed
    for r in results:
        r["metrics"]["exact_match"] = 0.6 if r["axis_values"]["pixel_shuffle"] == 4 else 0.4
    (e,) = write_findings(tmp_path, grid, results, "# Ablation results: g", plots=False)
    assert e["verdict"] == verdict
    if verdict == "inconclusive":
        assert "neither arm learned the task" in e["reason"] and "0.600 (arm)" in e["reason"]
        assert "neither arm learned" in (tmp_path / "findings.md").read_text()


def test_a_finding_without_finished_runs_is_reported_inconclusive(tmp_path):
    grid = parse_grid(two_arms())
    (e,) = write_findings(tmp_path, grid, _fake_results([0.1])[:1], "# Ablation results: g", plots=False)
    assert e["verdict"] == "inconclusive" and "0 paired seed" in e["reason"]
    assert "no seed has both arms finished" in (tmp_path / "findings.md").read_text()


# --------------------------------------------------------------------------- reduced shipped grid, end to end
def reduced_findings_grid(tmp_path: Path, only: str | None = None) -> Path:
    """The shipped findings grid with the tiny model, a few steps, tiny tasks and two seeds."""
    raw = yaml.safe_load(FINDINGS.read_text())
    raw["seeds"] = [0, 1]
    raw["jobs"] = 1  # runs in turn, so the kill below lands in a known run; the pool is tested on its own
    raw["base"].update(TINY)
    raw["task"].update({"train": 16, "val": 4, "width": 64, "height": 32})
    for exp in raw["experiments"]:
        if exp.get("points") and "steps" in exp["points"][0]:
            for i, p in enumerate(exp["points"]):
                p["steps"] = 4 + i
        if exp.get("task"):
            exp["task"].update({"train": 12, "val": 4})
            if exp["task"].get("media") == "video":
                exp["task"].update({"width": 32, "height": 32})
        exp.get("base", {}).pop("steps", None)
        exp.get("base", {}).pop("checkpoint_every", None)
    if only:
        raw["experiments"] = [e for e in raw["experiments"] if e["name"] == only]
        raw["findings"] = [f for f in raw["findings"] if f["experiment"] == only]
    path = tmp_path / "findings-reduced.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _quality(evaluated: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "cost"} for e in evaluated]


@pytest.mark.slow
def test_reduced_findings_grid_writes_a_complete_report(tmp_path):
    path = reduced_findings_grid(tmp_path)
    grid, _, points = plan(path, ONE_THREAD)
    out = run_grid(path, tmp_path / "out", ONE_THREAD)
    text = (out / "findings.md").read_text()
    evaluated = json.loads((out / "findings.json").read_text())
    assert len(evaluated) == len(grid.findings) == 6
    for f, e in zip(grid.findings, evaluated):
        assert f"## {f.name}" in text
        assert e["verdict"] in ("reproduced", "reversed", "inconclusive") and e["reason"]
        assert e["seeds"] == [0, 1]
        assert (out / "findings" / f"{f.name}.png").stat().st_size > 1000
        for side in ("arm", "baseline"):
            assert set(e["cost"][side]["samples_per_s"]) == {"0", "1"}  # JSON keys: seeds as text
    assert text.count("| visual tok/sample |") == 6
    # shared baselines trained once
    assert len(list((out / "runs").iterdir())) == len({run_hash(p) for p in points})


@pytest.mark.slow
def test_killed_findings_run_resumes_and_gives_the_same_report(tmp_path):
    path = reduced_findings_grid(tmp_path, only="loss")
    ref = run_grid(path, tmp_path / "ref", ONE_THREAD)

    class Kill(Exception):
        pass

    def kill_in_third_run(msg: str) -> None:
        if msg.startswith("[3/") or ("lossfull-s0" in msg and "step 3/" in msg):
            raise Kill

    out = tmp_path / "out"
    with pytest.raises(Kill):
        run_grid(path, out, ONE_THREAD, progress=kill_in_third_run)
    finished = sorted(p.name for p in (out / "runs").iterdir() if (p / "result.json").is_file())
    assert len(finished) == 2
    stamps = {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in finished}
    partial = json.loads((out / "findings.json").read_text())
    assert partial[0]["verdict"] == "inconclusive"  # written whatever the outcome
    seen: list[str] = []
    run_grid(path, out, ONE_THREAD, progress=seen.append)
    assert {n: (out / "runs" / n / "result.json").stat().st_mtime_ns for n in finished} == stamps
    trained = [m for m in seen if m.startswith("[") and "done]" not in m]
    assert trained == ["[1/2] loss-lossfull-s0-" + trained[0].split("-")[-1], trained[1]]
    assert not any(f"{n}:" in m for n in finished for m in seen if "step" in m)
    assert _quality(json.loads((out / "findings.json").read_text())) == _quality(json.loads((ref / "findings.json").read_text()))
    table = [ln for ln in (out / "findings.md").read_text().splitlines() if ln.startswith("| f6")]
    assert table == [ln for ln in (ref / "findings.md").read_text().splitlines() if ln.startswith("| f6")]


@pytest.mark.slow
def test_runs_in_parallel_processes_equal_runs_in_turn_and_resume_after_a_kill(tmp_path):
    """``jobs: 2`` trains the same runs as ``jobs: 1`` (same threads, same numbers), and a kill mid-pool resumes."""
    path = reduced_findings_grid(tmp_path, only="loss")
    ref = run_grid(path, tmp_path / "ref", ONE_THREAD)
    two = AblationOptions(threads=1, jobs=2)

    class Kill(Exception):
        pass

    def kill_after_first_finished(msg: str) -> None:
        if msg.startswith("[1/4 done]"):
            raise Kill

    out = tmp_path / "out"
    with pytest.raises(Kill):
        run_grid(path, out, two, progress=kill_after_first_finished)
    assert not _workers_alive()  # the pool ended with the grid: nothing keeps writing into out/
    finished = sorted(p.name for p in (out / "runs").iterdir() if (p / "result.json").is_file())
    assert 1 <= len(finished) < 4
    seen: list[str] = []
    run_grid(path, out, two, progress=seen.append)
    assert seen[0].startswith("task ") and f"{len(finished)} finished before), 2 at a time x 1 thread" in seen[1]
    trained = {m.split(":")[0] for m in seen if ": step " in m or ": resuming" in m}
    assert len(trained) == 4 - len(finished) and not trained & set(finished)  # only the unfinished runs train
    assert _quality(json.loads((out / "findings.json").read_text())) == _quality(json.loads((ref / "findings.json").read_text()))
    for run in (ref / "runs").iterdir():
        a, b = (json.loads((d / run.name / "result.json").read_text()) for d in (ref / "runs", out / "runs"))
        assert a["loss_curve"] == b["loss_curve"] and a["metrics"]["val_loss"] == b["metrics"]["val_loss"]


def _workers_alive() -> bool:
    import multiprocessing

    return any(p.is_alive() for p in multiprocessing.active_children())


def test_jobs_is_a_positive_number_or_auto(tmp_path, capsys):
    with pytest.raises(RecipeError) as err:
        parse_grid(two_arms(jobs=0))
    assert err.value.field == "jobs"
    assert parse_grid(two_arms(jobs="auto")).jobs == "auto"
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(two_arms()))
    assert cli_main(["ablate", str(path), "--out", str(tmp_path / "o"), "--jobs", "two"]) == 2
    assert "--jobs" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_auto_jobs_is_one_per_core_on_cpu_and_one_on_a_gpu(monkeypatch):
    from ablations import parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    assert parallel.resolve_jobs("auto", "cpu", runs=45) == 2
    assert parallel.resolve_jobs("auto", "cpu", runs=1) == 1
    assert parallel.resolve_jobs("auto", "cuda", runs=45) == 1
    assert parallel.resolve_jobs(3, "cpu", runs=45) == 3
    assert parallel.threads_per_job(2, None) == 1 and parallel.threads_per_job(1, None) == 2
    assert parallel.threads_per_job(2, 2) == 2
