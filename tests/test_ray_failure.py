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


def _shards(root: Path, sizes: list[int], cut: dict[int, str] | None = None) -> Path:
    """WebDataset shards s0.tar, s1.tar, ... of ``sizes`` captioned samples; ``cut`` ends a shard inside its last
    member's data (``member``: the last sample is cut) or inside its last sample's first header (``tail``)."""
    import tarfile

    from tests.readers_fixtures import img2dataset_shard, jpeg

    folder = root / "wds"
    folder.mkdir(parents=True)
    for s, n in enumerate(sizes):
        path = img2dataset_shard(folder / f"s{s}.tar", [
            (f"k{s}{i}", jpeg(synth.photo_like(10 * s + i + 1, (64, 48))), f"caption {s} {i}", {"n": i})
            for i in range(n)])
        how = (cut or {}).get(s)
        if how:
            with tarfile.open(path) as tf:
                ms = tf.getmembers()
            at = ms[-1].offset_data + ms[-1].size // 2 if how == "member" else ms[-3].offset + 100
            path.write_bytes(path.read_bytes()[:at])
    return folder


def _text(i: int) -> str:
    return f"Row number {i} of a small table, long enough in words and characters to pass the text filters."


def _lines(path: Path, lo: int, n: int) -> None:
    """A JSON Lines file of rows ``lo .. lo + n - 1``."""
    path.write_text("".join(json.dumps({"text": _text(i), "n": i}) + "\n" for i in range(lo, lo + n)))


def _source_recipe(root: Path, source: str) -> Path:
    p = root / "r.yaml"
    p.write_text(f"sources:\n  - {source}\noutput: {{shard_rows: 4}}\n")
    return p


def _apart(recipe, si: int, spec: dict) -> None:
    """Reading a chunk's inputs one at a time and merging them gives the whole chunk's run, and a chunk ledgered
    unread has one row per row a read gives, at read/crash, with the uri and position a read gives it."""
    from curation.engine.ray_engine import _isolated, merge_parts, recipe_json
    from curation.engine.stages import bytes_table
    from curation.readers import SourceContext, reader_class
    from curation.readers.base import decode_spec

    js = recipe_json(recipe)
    whole = _isolated(js, recipe.base_dir, si, spec, 0, None, "run")
    parts = [((lo, -1), _isolated(js, recipe.base_dir, si, spec, lo, lo + 1, "read")) for lo in range(spec["count"])]
    kept, ledger, counts = merge_parts(recipe, si, spec, parts[::-1])
    assert kept.equals(bytes_table(whole["kept"])) and ledger.equals(bytes_table(whole["ledger"]))
    assert counts["read"] == whole["counts"]["read"] and counts["inputs"] == spec["count"]
    cls = reader_class(spec["type"])
    ctx = SourceContext.of(recipe, si)
    read = cls().read(ctx, decode_spec(cls.spec_type, spec))
    unread = cls().unread(ctx, decode_spec(cls.spec_type, spec), "crash", "died")
    assert unread.select(["_uri", "_pos"]).equals(read.select(["_uri", "_pos"]))
    assert set(unread.column("_drop_stage").to_pylist()) == {"read"}
    assert set(unread.column("_drop_reason").to_pylist()) == {"crash"}
    return read, unread


def test_samples_of_a_shard_read_apart_merge_into_the_chunk_and_unread_keep_their_ids(tmp_path):
    """WebDataset: an input is a sample (or a cut shard's tail); a part reads only its own members (its header
    offsets from a scan of the chunk's headers), and an unread sample has the id a read gives it."""
    from curation.engine.ray_engine import narrowed
    from curation.readers import plan_source

    _shards(tmp_path, [3, 3, 3], cut={1: "member", 2: "tail"})
    recipe = load_recipe(_source_recipe(tmp_path, "{name: w, kind: image_text, format: webdataset, path: wds, "
                                                   "chunk_size: 8}"))
    chunks = plan_source(recipe, 0).chunks
    assert [c["count"] for c in chunks] == [3, 3, 3]  # s2's cut sample is a tail of its own
    for spec in chunks:
        read, unread = _apart(recipe, 0, spec)
        cols = ["id", "_key", "_uri", "_pos"]
        assert unread.select(cols).equals(read.select(cols)) and unread.num_rows == 3
        assert unread.column("meta").null_count == 3 and unread.column("text").null_count == 3
        assert [narrowed(spec, i, i + 1)["start"] for i in range(3)] == sorted({narrowed(spec, i, 3)["start"]
                                                                               for i in range(3)})
    reasons = {r["_key"]: r["_drop_reason"] for spec in chunks[1:]
               for r in _apart(recipe, 0, spec)[0].to_pylist() if r["_drop_reason"]}
    assert set(reasons.values()) == {"truncated_shard"} and len(reasons) == 2 and reasons.get("s1.tar:k12")
    assert [k for k in reasons if k.startswith("s2.tar:<tail@")]  # the cut header: a row of its own


def test_table_rows_read_apart_merge_into_the_chunk_and_unread_rows_get_stable_keys(tmp_path):
    """JSON Lines, JSON arrays and Parquet: an input is a line, an element or a row. An unread JSON line is keyed
    as one that fails to parse (a hash of its bytes), an unread Parquet row by its ordinal in the source
    (``pos:<n>``): the id a read gives comes from content that was not read."""
    import pyarrow.parquet as pq

    from curation.readers import plan_source

    rows = [{"text": f"line number {i}", "n": i} for i in range(7)]
    for d in ("t", "arr", "pq"):
        (tmp_path / d).mkdir()
    (tmp_path / "t" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + "\nnot json\n"
                                            + json.dumps(rows[3]) + "\n")  # a blank line and a bad one
    (tmp_path / "t" / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[4:]))
    (tmp_path / "arr" / "c.json").write_text(json.dumps(rows, indent=1))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "pq" / "d.parquet", row_group_size=3)
    src = "{name: %s, kind: text, format: %s, path: %s, chunk_size: 4}"
    p = tmp_path / "r.yaml"
    p.write_text("sources:\n" + "".join(f"  - {src % t}\n" for t in (("j", "jsonl", "t"), ("a", "jsonl", "arr"),
                                                                        ("p", "parquet", "pq"))))
    recipe = load_recipe(p)
    keys: dict[str, list] = {}
    for si, name in enumerate("jap"):
        for spec in plan_source(recipe, si).chunks:
            read, unread = _apart(recipe, si, spec)
            keys.setdefault(name, []).append((read.column("_key").to_pylist(), unread.column("_key").to_pylist()))
    (r0, u0), (r1, u1), _ = keys["j"]  # a.jsonl: 4 lines (3 rows, a blank), then the bad line and a row
    assert len(r0) == len(u0) == 3 and all(k.startswith("raw:") for k in u0) and not set(u0) & set(r0)
    assert r1[0] == u1[0] and r1[0].startswith("raw:")  # the bad line: the key a failed parse gives it
    assert all(k.startswith("raw:") for _, u in keys["a"] for k in u)
    assert [u for _, u in keys["p"]] == [[f"pos:{i}" for i in range(4)], [f"pos:{i}" for i in range(4, 7)]]


def test_the_read_fault_can_poison_one_input_of_a_chunk(monkeypatch):
    from curation.engine.ray_engine import READ_CRASH_ENV, read_poisoned

    spec = {"type": "webdataset", "source": 0, "pos0": 3, "shard": "/d/s1.tar", "label": "s1.tar", "start": 0,
            "stop": -1, "count": 3}
    assert not read_poisoned(spec)
    monkeypatch.setenv(READ_CRASH_ENV, "s1.tar")
    assert read_poisoned(spec) and not read_poisoned({**spec, "shard": "/d/s2.tar", "label": "s2.tar"})
    monkeypatch.setenv(READ_CRASH_ENV, "s1.tar@4")  # input 4 of the source: the chunk's second sample
    assert read_poisoned(spec) and read_poisoned({**spec, "pos0": 4, "count": 1})
    assert not read_poisoned({**spec, "count": 1}) and not read_poisoned({**spec, "pos0": 5, "count": 1})


class _Died(BaseException):
    """A simulated worker death (the test hooks' segfault, raised instead of sent)."""


def _isolate_here(recipe, specs: dict[int, dict], monkeypatch) -> tuple[int, list, dict]:
    """Run the driver's isolation loop (bisect_chunks) with every part in this process, one after the other;
    the hooks' SIGSEGV raises _Died instead. Returns (crashed, the parts that died, the staged chunk results)."""
    from curation.engine.ray_engine import _isolated, bisect_chunks, recipe_json

    kill = os.kill

    def fake_kill(pid: int, sig: int) -> None:
        if pid == os.getpid() and sig == signal.SIGSEGV:
            raise _Died()
        kill(pid, sig)

    monkeypatch.setattr(os, "kill", fake_kill)
    js = recipe_json(recipe)
    queue: list = []
    died: list = []
    staged: dict = {}

    def next_done():
        part = queue.pop(0)
        try:
            return part, _isolated(js, recipe.base_dir, part.k, specs[part.k], part.lo, part.hi, part.mode,
                                   part.within)
        except _Died as death:
            died.append(part)
            return part, death

    crashed = bisect_chunks(specs, list(specs), queue.append, next_done, lambda k, parts: staged.update({k: parts}))
    return crashed, died, staged


def test_a_decode_crash_inside_a_read_bisection_is_decode_crash_and_a_read_crash_is_read_crash(tmp_path,
                                                                                                monkeypatch):
    """A chunk whose reading kills its workers (one file's read) holds another file whose decode kills them: the
    inputs are bisected; an input whose part dies is read alone without a decode; the one whose reading kills
    is read/crash, the one read fine whose decode kills is decode/crash, the other two are kept as one run
    keeps them. Every part dies at most CRASH_LIMIT times, and the deaths are few."""
    from curation.engine.ray_engine import CRASH_LIMIT, merge_parts
    from curation.readers import plan_source

    _images(tmp_path, 3)
    (tmp_path / "imgs" / POISON).unlink()
    recipe = load_recipe(_recipe(tmp_path, 4, dedup=False))  # one chunk: p00, p01, p02, p03_copy
    spec = plan_source(recipe, 0).chunks[0]
    clean = merge_parts(recipe, 0, spec, list(_isolate_here(recipe, {0: spec}, monkeypatch)[2][0]))
    monkeypatch.setenv("SMOLCURATE_TEST_READ_CRASH", "p02.jpg")
    monkeypatch.setenv("SMOLCURATE_TEST_DECODE_CRASH", "p00.jpg")
    crashed, died, staged = _isolate_here(recipe, {0: spec}, monkeypatch)
    kept, ledger, counts = merge_parts(recipe, 0, spec, staged[0])
    assert crashed == 2 and counts["crashed"] == 2 and counts["read"] == 4
    labels = {Path(r["uri"]).name: (r["stage"], r["reason"]) for r in ledger.to_pylist()}
    assert labels == {"p00.jpg": ("decode", "crash"), "p02.jpg": ("read", "crash")}
    keep = pa.compute.is_in(clean[0].column("id"), value_set=kept.column("id"))
    assert kept.equals(clean[0].filter(keep)) and kept.num_rows == 2
    per_part: dict = {}
    for part in died:
        key = (part.mode, part.lo, part.hi, part.within)
        per_part[key] = per_part.get(key, 0) + 1
    assert max(per_part.values()) <= CRASH_LIMIT
    # the chunk read x2, then its inputs [0,2) [2,4) [0,1) [2,3) once each, p02 read alone (no decode) once (its
    # read's death counted), p00's row run alone x2
    assert len(died) == 9, per_part
    assert per_part[("rows", 0, None, (2, 3))] == CRASH_LIMIT - 1 and per_part[("run", 0, 1, (0, 1))] == CRASH_LIMIT


def _one_poisoned(tmp_path: Path, source: str, poison: str, monkeypatch) -> tuple[dict, dict]:
    """The clean and the poisoned (READ_CRASH ``poison``) results, per chunk, of the isolation loop run here on
    every chunk of ``source``; asserts one input crashed, and only chunk 1 died."""
    from curation.engine.ray_engine import merge_parts
    from curation.readers import plan_source

    recipe = load_recipe(_source_recipe(tmp_path, source))
    specs = dict(enumerate(plan_source(recipe, 0).chunks))
    runs = []
    for env in (None, poison):
        if env:
            monkeypatch.setenv("SMOLCURATE_TEST_READ_CRASH", env)
        crashed, died, staged = _isolate_here(recipe, specs, monkeypatch)
        assert (crashed, {p.k for p in died}) == ((1, {1}) if env else (0, set()))
        runs.append({k: merge_parts(recipe, k, specs[k], parts) for k, parts in staged.items()})
    clean, out = runs
    assert out[0][0].equals(clean[0][0]) and out[0][1].num_rows == 0  # the other chunk: untouched
    row = out[1][1].to_pylist()
    assert len(row) == 1 and (row[0]["stage"], row[0]["reason"]) == ("read", "crash")
    return clean, out


def test_one_poisoned_row_of_a_table_chunk_is_read_crash_and_its_chunk_mates_are_kept(tmp_path, monkeypatch):
    """The read fault on one line of a JSONL chunk (``<file>@<n>``): the isolation loop reads the lines apart; the
    poisoned one is ledgered unread, the others are what the clean run keeps."""
    (tmp_path / "t").mkdir()
    for name, lo in (("a", 0), ("b", 3)):
        _lines(tmp_path / "t" / f"{name}.jsonl", lo, 3)
    clean, out = _one_poisoned(tmp_path, "{name: j, kind: text, format: jsonl, path: t, chunk_size: 3}",
                               "b.jsonl@4", monkeypatch)  # b.jsonl's second line: input 4 of the source
    kept, ledger, _ = out[1]
    assert ledger.column("uri")[0].as_py().endswith("b.jsonl:2")
    assert kept.column("text").to_pylist() == [_text(3), _text(5)]
    assert kept.equals(clean[1][0].filter(pa.compute.is_in(clean[1][0].column("text"), value_set=kept.column("text"))))


def test_one_poisoned_sample_of_a_shard_chunk_is_read_crash_with_its_id_and_its_chunk_mates_are_kept(tmp_path,
                                                                                                     monkeypatch):
    """The read fault on one sample of a WebDataset chunk (``s1.tar@4``): the isolation loop reads the samples
    apart; the poisoned one is ledgered unread with the id a read gives it, its chunk-mates are the clean run's."""
    _shards(tmp_path, [3, 3])
    clean, out = _one_poisoned(tmp_path, "{name: w, kind: image_text, format: webdataset, path: wds, chunk_size: 8}",
                               "s1.tar@4", monkeypatch)  # s1.tar's second sample: input 4 of the source
    kept, ledger, _ = out[1]
    ids = clean[1][0].column("id")
    assert ledger.column("uri")[0].as_py().endswith("s1.tar#k11") and ledger.column("id")[0] == ids[1]
    assert kept.column("text").to_pylist() == ["caption 1 0", "caption 1 2"]
    assert kept.equals(clean[1][0].filter(pa.compute.invert(pa.compute.equal(ids, ids[1]))))


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


@pytest.mark.ray
@pytest.mark.slow
def test_a_poisoned_shard_and_a_poisoned_table_file_are_read_crash_and_the_rest_is_the_local_run(tmp_path,
                                                                                                 ray_session,
                                                                                                 monkeypatch):
    """One job, two sources: a WebDataset shard and a JSONL file whose reading kills every worker. Their chunks
    are read apart by samples and lines; each sample and line is ledgered read/crash (a sample with the id a
    read gives it, a line keyed by its bytes), and everything else is the clean local run's."""
    _shards(tmp_path, [3, 2, 2])
    (tmp_path / "wds" / "s1.tar").rename(tmp_path / "wds" / "s1-poisoned.tar")  # 2 samples
    (tmp_path / "t").mkdir()
    for name, lo, n in (("a", 0, 3), ("b-poisoned", 3, 2), ("c", 5, 2)):
        _lines(tmp_path / "t" / f"{name}.jsonl", lo, n)
    p = tmp_path / "r.yaml"
    p.write_text("sources:\n  - {name: w, kind: image_text, format: webdataset, path: wds, chunk_size: 8}\n"
                 "  - {name: j, kind: text, format: jsonl, path: t, chunk_size: 8}\noutput: {shard_rows: 4}\n")
    recipe = load_recipe(p)
    run_job(recipe, tmp_path / "local", engine="local", quiet=True)
    monkeypatch.setenv("SMOLCURATE_TEST_READ_CRASH", "-poisoned.")  # every read of a chunk of those two files dies
    res = run_job(recipe, tmp_path / "ray", engine="ray", workers=2, quiet=True)
    loc, ray_ = (open_manifest(tmp_path / d) for d in ("local", "ray"))
    assert res.kept == loc.info["totals"]["rows"] - 4 and ray_.info["totals"]["read"] == loc.info["totals"]["read"]
    ledger = ray_.ledger().to_pylist()
    assert all((r["stage"], r["reason"]) == ("read", "crash") for r in ledger) and len(ledger) == 4
    assert sorted(r["uri"].rsplit("/", 1)[1] for r in ledger) == [
        "b-poisoned.jsonl:1", "b-poisoned.jsonl:2", "s1-poisoned.tar#k10", "s1-poisoned.tar#k11"]
    assert loc.ledger().num_rows == 0
    table = loc.table()
    lost = pa.compute.is_in(table.column("id"), value_set=pa.array([r["id"] for r in ledger]))
    assert pa.compute.sum(lost).as_py() == 2  # the samples' ids are the ones a read gives; the lines' are not
    gone = pa.compute.or_(lost, pa.compute.is_in(table.column("text"), value_set=pa.array([_text(3), _text(4)])))
    assert ray_.table().equals(table.filter(pa.compute.invert(gone)))
    assert {"source": "w", "stage": "read", "reason": "crash", "count": 2} in ray_.info["drops"]
    assert {"source": "j", "stage": "read", "reason": "crash", "count": 2} in ray_.info["drops"]
    validate(tmp_path / "ray")


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
