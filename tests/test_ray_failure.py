"""Worker failure on the Ray engine: a worker SIGKILLed mid-job, an input that segfaults its decoder, workers
without smolcurate. The faults come from the test-only hooks of media/decoded.py (``SMOLCURATE_TEST_*``), which
the engine forwards to the workers it starts (curation.engine.ray_session.worker_runtime_env)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pytest

from curation import synth
from curation.engine.job import run_job
from curation.recipe import load_recipe
from manifests.cli import main as cli_main
from manifests.errors import UserError
from manifests.reader import open_manifest
from manifests.validate import validate

POISON = "poison.jpg"


def _images(root: Path, n: int) -> Path:
    """``n`` distinct photos, a copy of the second (an exact duplicate) and a file no decoder can read."""
    img = root / "imgs"
    img.mkdir(parents=True)
    for i in range(n):
        synth.photo_like(i + 1, (64, 48)).save(img / f"p{i:02d}.jpg")
    shutil.copy(img / "p01.jpg", img / f"p{n:02d}_copy.jpg")
    (img / POISON).write_bytes(np.random.default_rng(7).bytes(3000))  # sorts last: the last chunk holds it
    return img


def _recipe(root: Path, chunk: int, dedup: bool = True) -> Path:
    p = root / "r.yaml"
    p.write_text(f"sources:\n  - {{name: photos, kind: images, path: imgs, chunk_size: {chunk}}}\n"
                 + ("dedup: {exact: true}\n" if dedup else "") + "output: {shard_rows: 4}\n")
    return p


def _same_data(a: Path, b: Path) -> None:
    ma, mb = open_manifest(a), open_manifest(b)
    assert ma.table().equals(mb.table())
    ia, ib = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert [s["sha256"] for s in ia["shards"]] == [s["sha256"] for s in ib["shards"]]
    assert ia["recipe_hash"] == ib["recipe_hash"]


def _same(a: Path, b: Path) -> None:
    _same_data(a, b)
    assert open_manifest(a).ledger().equals(open_manifest(b).ledger())
    ia, ib = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ia["sources"] == ib["sources"] and [s["sha256"] for s in ia["ledger"]] == [s["sha256"] for s in ib["ledger"]]


# --------------------------------------------------------------------------- without a cluster


def test_worker_failures_are_told_from_errors_in_the_code():
    import ray.exceptions as rx

    from curation.engine.ray_engine import worker_failure

    assert worker_failure(rx.WorkerCrashedError())
    assert worker_failure(rx.NodeDiedError("n"))
    try:  # a Ray Data error raised from an actor death, as the streaming executor chains it
        try:
            raise rx.ActorDiedError()
        except rx.ActorDiedError as inner:
            raise RuntimeError("execution failed") from inner
    except RuntimeError as exc:
        assert worker_failure(exc)
    assert not worker_failure(ValueError("a bug"))
    assert not worker_failure(UserError("bad input", field="x"))


def test_bisected_parts_merge_into_the_chunk_one_run_stages(tmp_path):
    """The isolation's row ranges, merged, are exactly the whole chunk's result (in-process, no Ray)."""
    from curation.engine.ray_engine import _isolated, merge_parts, recipe_json
    from curation.engine.stages import bytes_table
    from curation.readers import plan_source

    _images(tmp_path, 5)
    recipe = load_recipe(_recipe(tmp_path, 7))
    spec = plan_source(recipe, 0).chunks[0]
    js = recipe_json(recipe)
    whole = _isolated(js, recipe.base_dir, 0, spec, 0, None, "run")
    assert _isolated(js, recipe.base_dir, 0, spec, 0, None, "rows") == {"rows": 7}
    parts = [(lo, _isolated(js, recipe.base_dir, 0, spec, lo, hi, "run")) for lo, hi in ((0, 1), (1, 4), (4, 7))]
    kept, ledger, counts = merge_parts(recipe, 0, spec, parts[::-1])
    assert kept.equals(bytes_table(whole["kept"]))
    assert ledger.equals(bytes_table(whole["ledger"]))
    assert (counts["read"], counts["kept"], counts["dropped"], counts["inputs"]) == (7, 6, 1, 7)
    # a row that crashed: read, never decoded, ledgered as decode/crash with the row as read
    crash = _isolated(js, recipe.base_dir, 0, spec, 6, 7, "crash")
    row = bytes_table(crash["ledger"]).to_pylist()
    assert len(row) == 1 and row[0]["uri"].endswith(POISON) and (row[0]["stage"], row[0]["reason"]) == ("decode", "crash")
    assert bytes_table(crash["kept"]).num_rows == 0 and crash["counts"]["crashed"] == 1


def test_inputs_read_apart_merge_into_the_chunk_and_an_unread_input_is_ledgered_as_read_crash(tmp_path):
    """A chunk whose reading kills its worker: its files read in ranges (in-process, no Ray) merge into the whole
    chunk's result; a file ledgered unread is the row a failed read of it gives, at read/crash."""
    from curation.engine.ray_engine import _isolated, merge_parts, narrowable, narrowed, recipe_json
    from curation.engine.stages import bytes_table
    from curation.readers import plan_source

    img = _images(tmp_path, 3)
    (img / "p01_empty.jpg").write_bytes(b"")  # a failed read (read/zero_bytes): sorts second
    recipe = load_recipe(_recipe(tmp_path, 7))
    spec = plan_source(recipe, 0).chunks[0]
    js = recipe_json(recipe)
    assert narrowable(spec) and [it[1] for it in narrowed(spec, 1, 3)["items"]] == ["p01.jpg", "p01_empty.jpg"]
    assert _isolated(js, recipe.base_dir, 0, spec, 0, None, "setup") == {"rows": 0}
    whole = _isolated(js, recipe.base_dir, 0, spec, 0, None, "run")
    parts = [(lo, _isolated(js, recipe.base_dir, 0, spec, lo, hi, "read")) for lo, hi in ((0, 1), (1, 2), (2, 4), (4, 6))]
    kept, ledger, counts = merge_parts(recipe, 0, spec, parts[::-1])
    assert kept.equals(bytes_table(whole["kept"])) and kept.num_rows == 4
    assert ledger.equals(bytes_table(whole["ledger"])) and ledger.num_rows == 2
    assert (counts["read"], counts["kept"], counts["dropped"], counts["inputs"]) == (6, 4, 2, 6)
    unread = _isolated(js, recipe.base_dir, 0, spec, 2, 3, "unread")
    assert bytes_table(unread["kept"]).num_rows == 0 and unread["counts"]["crashed"] == 1
    row = bytes_table(unread["ledger"])
    failed = bytes_table(whole["ledger"]).filter(pa.compute.equal(bytes_table(whole["ledger"]).column("stage"), "read"))
    assert failed.column("uri").to_pylist()[0].endswith("p01_empty.jpg") and failed.column("reason")[0].as_py() == "zero_bytes"
    assert (row.column("stage")[0].as_py(), row.column("reason")[0].as_py()) == ("read", "crash")
    same = [c for c in row.column_names if c not in ("reason", "detail")]  # the chunk's ledger has score columns too
    assert row.select(same).equals(failed.select(same))


# --------------------------------------------------------------------------- on the shared Ray session


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("restarts", [True, False], ids=["actor-restarts", "new-passes"])
def test_an_input_that_segfaults_its_decoder_is_isolated_and_ledgered(tmp_path, ray_session, monkeypatch, restarts):
    """The poisoned chunk is bisected down to the one input; its chunk-mates (a duplicate among them) are kept
    as if the input were a corrupt file, which is what the local engine makes of the same file without the hook.

    With restarts, Ray restarts the dead actor and the third start of the chunk hands it back; without (Ray's
    bounds used up), every death fails the pass, and the counts carried across passes isolate the chunk."""
    from curation.engine import ray_engine

    if not restarts:
        monkeypatch.setattr(ray_engine, "ACTOR_RESTARTS", 0)
    _images(tmp_path, 2)  # chunks of 2: [p00, p01], [p02_copy (= p01), poison]
    recipe = load_recipe(_recipe(tmp_path, 2, dedup=restarts))  # the dedup phase once is enough
    run_job(recipe, tmp_path / "local", engine="local", quiet=True)  # the poison is an undecodable file there
    monkeypatch.setenv("SMOLCURATE_TEST_DECODE_CRASH", POISON)  # every decode of it kills its process
    res = run_job(recipe, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    info = {d: open_manifest(tmp_path / d).info for d in ("local", "ray")}
    assert res.kept == (2 if restarts else 3) and info["ray"]["totals"] == info["local"]["totals"]
    assert info["ray"]["sources"] == info["local"]["sources"]
    assert {"source": "photos", "stage": "decode", "reason": "crash", "count": 1} in info["ray"]["drops"]
    _same_data(tmp_path / "local", tmp_path / "ray")
    validate(tmp_path / "ray")
    loc, ray_ = (open_manifest(tmp_path / d).ledger() for d in ("local", "ray"))
    by_uri = {r["uri"]: r for r in ray_.to_pylist()}
    poison = next(u for u in by_uri if u.endswith(POISON))
    assert (by_uri[poison]["stage"], by_uri[poison]["reason"]) == ("decode", "crash")
    assert {r["uri"]: r["reason"] for r in loc.to_pylist()}[poison] == "undecodable"
    # every other column of every ledger row is what the corrupt file gave
    same = [c for c in loc.column_names if c not in ("reason", "detail")]
    assert ray_.select(same).equals(loc.select(same))
    # the poison's chunk-mate (a copy of p01) is kept, or with dedup one of the pair is kept, the other ledgered
    pair = {"p01.jpg", "p02_copy.jpg"}
    assert [r["stage"] for u, r in by_uri.items() if Path(u).name in pair] == (["dedup"] if restarts else [])


@pytest.mark.ray
@pytest.mark.slow
def test_an_input_whose_reading_segfaults_is_isolated_and_ledgered_as_read_crash(tmp_path, ray_session, monkeypatch):
    """The reading of a chunk kills its workers (SMOLCURATE_TEST_READ_CRASH): the operators set up alone, so its
    files are bisected; the one whose reading kills is ledgered as read/crash, its chunk-mate kept, the rest as
    the local engine makes of the same files with that one empty (a failed read)."""
    img = _images(tmp_path, 2)  # chunks of 2: [p00, p01], [p02_copy, poison]
    (img / POISON).write_bytes(b"")  # the local engine's counterpart: a file whose read fails
    recipe = load_recipe(_recipe(tmp_path, 2, dedup=False))
    run_job(recipe, tmp_path / "local", engine="local", quiet=True)
    monkeypatch.setenv("SMOLCURATE_TEST_READ_CRASH", POISON)  # every read of a chunk naming it kills its process
    res = run_job(recipe, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    info = {d: open_manifest(tmp_path / d).info for d in ("local", "ray")}
    assert res.kept == 3 and info["ray"]["totals"] == info["local"]["totals"]
    assert info["ray"]["sources"] == info["local"]["sources"]
    assert {"source": "photos", "stage": "read", "reason": "crash", "count": 1} in info["ray"]["drops"]
    _same_data(tmp_path / "local", tmp_path / "ray")
    validate(tmp_path / "ray")
    loc, ray_ = (open_manifest(tmp_path / d).ledger() for d in ("local", "ray"))
    row = ray_.to_pylist()
    assert len(row) == 1 and row[0]["uri"].endswith(POISON) and (row[0]["stage"], row[0]["reason"]) == ("read", "crash")
    assert loc.column("reason").to_pylist() == ["zero_bytes"]
    same = [c for c in loc.column_names if c not in ("reason", "detail")]
    assert ray_.select(same).equals(loc.select(same))


def _stage_workers() -> list:
    """This test session's stage actors (descendants of this process: the Ray it started), never anyone else's."""
    import psutil

    found = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if any("Stage_cpu_0" in part for part in p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.ray
@pytest.mark.slow
def test_a_worker_sigkilled_mid_job_is_replaced_and_the_output_is_unchanged(tmp_path, ray_session, monkeypatch):
    _images(tmp_path, 5)
    (tmp_path / "imgs" / POISON).unlink()
    recipe = load_recipe(_recipe(tmp_path, 1))  # 6 chunks of one input
    run_job(recipe, tmp_path / "clean", engine="local", quiet=True)
    monkeypatch.setenv("SMOLCURATE_TEST_DECODE_SLEEP", "0.4")  # a slow decoder, so the kill lands mid-job
    out = tmp_path / "ray"
    box: dict = {}
    job = threading.Thread(target=lambda: box.update(res=run_job(recipe, out, engine="ray", workers=2, quiet=True)),
                           daemon=True)
    job.start()
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and job.is_alive():
        staged = len(list((out / ".staging").glob("chunk-*.json"))) if (out / ".staging").is_dir() else 0
        workers = _stage_workers()
        if staged >= 1 and workers:
            workers[0].send_signal(signal.SIGKILL)
            killed = (workers[0].pid, staged)
        time.sleep(0.05)
    job.join(timeout=300)
    assert killed is not None and killed[1] < 6, "no worker was killed mid-job"
    assert not job.is_alive() and "res" in box
    _same(tmp_path / "clean", out)


@pytest.mark.ray
def test_workers_without_smolcurate_get_one_line_saying_how_to_ship_it(tmp_path, ray_session, monkeypatch, capsys):
    from curation.engine import ray_session as rs

    with pytest.raises(UserError) as err:
        rs.check_workers(("curation.engine.stages", "smolcurate_is_not_installed_here"))
    line = str(err.value)
    assert "\n" not in line and line.startswith("--ray-address: Ray workers on node")
    assert "No module named 'smolcurate_is_not_installed_here'" in line and "working_dir" in line and "pip" in line
    rs.check_workers()  # this session's workers have it
    # through the CLI: exit 2, one line, nothing curated
    monkeypatch.setattr(rs, "WORKER_MODULES", ("smolcurate_is_not_installed_here",))
    _images(tmp_path, 2)
    code = cli_main(["curate", str(_recipe(tmp_path, 3)), "--out", str(tmp_path / "out"), "--engine", "ray", "--quiet"])
    stderr = capsys.readouterr().err
    assert code == 2 and stderr.count("\n") == 1 and "cannot import smolcurate" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_missing_module_behind_a_ray_error_is_found():
    from curation.engine.ray_session import missing_module

    class Wrapped(Exception):
        pass

    try:
        try:
            import smolcurate_is_not_installed_here  # noqa: F401
        except ImportError as inner:
            raise Wrapped("task failed") from inner
    except Wrapped as exc:
        assert missing_module(exc) == "ModuleNotFoundError: No module named 'smolcurate_is_not_installed_here'"
    text = "System error: Failed to unpickle\ntraceback...\nModuleNotFoundError: No module named 'curation'"
    assert missing_module(RuntimeError(text)) == "ModuleNotFoundError: No module named 'curation'"
    assert missing_module(RuntimeError("out of memory")) is None


def test_a_pipeline_error_from_a_worker_without_smolcurate_is_the_shipping_advice():
    from curation.engine.ray_engine import _raise_if_not_shipped

    with pytest.raises(UserError, match=r"^--ray-address: Ray workers cannot import smolcurate \(ModuleNotFoundError: "
                                        r"No module named 'curation'\); ship it with the job's runtime_env"):
        _raise_if_not_shipped(RuntimeError("ActorDiedError: creation task failed\nModuleNotFoundError: "
                                           "No module named 'curation'"))
    _raise_if_not_shipped(RuntimeError("ModuleNotFoundError: No module named 'rapidocr'"))  # an extra, not us


def _dying(starts: Path, always: bool):
    """A partition function whose task for partition 1 SIGKILLs its worker (the first time, or every time);
    each start leaves a file in ``starts``. Built in a closure, so Ray ships it by value."""

    def run(p: int) -> int:
        import uuid

        (starts / f"{p}-{uuid.uuid4().hex}").touch()
        if p == 1 and (always or len(list(starts.glob("1-*"))) == 1):
            os.kill(os.getpid(), signal.SIGKILL)
        return 10 * p

    return run


@pytest.mark.ray
def test_a_dedup_resolve_task_whose_worker_dies_is_retried_a_bounded_number_of_times(tmp_path, ray_session,
                                                                                   monkeypatch):
    from curation.dedup.parallel import ray_map
    from curation.engine import ray_engine
    from curation.engine.ray_engine import WorkerFailureError

    once, always = tmp_path / "once", tmp_path / "always"
    once.mkdir(), always.mkdir()
    assert ray_map(_dying(once, always=False), [0, 1, 2], num_cpus=0.5) == [0, 10, 20]  # retried on a new worker
    assert len(list(once.glob("1-*"))) == 2
    # the bound is the pipeline's TASK_RETRIES (lowered here: each retry is a worker start)
    monkeypatch.setattr(ray_engine, "TASK_RETRIES", 1)
    with pytest.raises(WorkerFailureError, match=r"^dedup resolve: a Ray task's worker died 2 times .*rerun the same"):
        ray_map(_dying(always, always=True), [1], num_cpus=0.5)
    assert len(list(always.glob("1-*"))) == 2
    with pytest.raises(ZeroDivisionError):  # an error in the code is not a worker death: not retried, not reworded
        ray_map(lambda p: 1 // 0, [0], num_cpus=0.5)
