"""The Ray engine: the job's stages as Ray Data ``map_batches`` stages, each with its own actor pool.

Chunk specs become a Ray Dataset with one block per chunk (a small job is
never cut into Ray's default 200 blocks; a large one streams). The first
stage reads a chunk and runs the fused CPU operators; each model operator
(``own_stage``) is a stage of its own whose actors hold its declared CPUs and,
when the cluster has them, a GPU; the last stage stages the chunk and sends
a small count record back to the driver. Between stages a chunk travels as one
record of Arrow IPC bytes (kept rows, ledger rows); Ray Data's streaming
executor bounds how many are in flight (backpressure on the object store), so
memory does not grow with the job. Every actor builds its stage's operators
once (``setup()`` per actor).

Worker failure (docs/storage.md, "Worker failure"): a stage actor that dies (a
SIGKILL, the OOM killer, its node removed, a decoder segfault) is restarted by
Ray, on another node if need be, and the chunk it held is retried there. Each
start of a chunk at a stage is counted by a small actor on the head node
(``_Attempts``); a chunk whose workers died ``CRASH_LIMIT`` times is not run a
third time in the pipeline but handed back to the driver, which isolates it:
its rows are bisected in single-use Ray tasks (every stage in one process)
until the rows that kill their worker every time stand alone. Those are
ledgered at stage ``decode`` with reason ``crash``; the other rows' results are
merged into the chunk exactly as an undisturbed run would stage it. When it is
the reading of the chunk that kills (and the operators set up fine alone), a
reader that can read a subset of its inputs (``narrow``/``unread``: files, table
ranges, WebDataset shards) has its inputs bisected instead; an input whose part
dies is read alone without a decode: if that kills too, it is ledgered unread at
stage ``read`` with reason ``crash``, else its rows are bisected. Every loop
is bounded: Ray's restarts and retries per actor and task, ``CRASH_LIMIT``
deaths per chunk and per row, and rounds that must each finish something.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable

from curation.engine.stages import ChunkState, StageRunner, StageSpec
from curation.engine.staging import Staging
from curation.recipe import Recipe
from manifests.errors import ManifestError, RecipeError, UserError

log = logging.getLogger(__name__)

#: key of a count record that carries a user error raised in a worker instead of counts
_USER_ERROR = "user_error"
_USER_ERRORS = {cls.__name__: cls for cls in (UserError, RecipeError, ManifestError)}
#: key of a count record that hands a chunk back to the driver: its workers died CRASH_LIMIT times on it
_CRASHED = "crashed"

#: deaths of its worker after which a chunk is isolated, and a single row is ledgered as ``decode/crash``
CRASH_LIMIT = 2
#: restarts Ray may make of one stage actor, and retries of one chunk's task, before the pass fails (then the
#: driver starts a new pass over the chunks not finished); TASK_RETRIES also bounds the retries of one dedup
#: resolve task (curation.dedup.parallel.ray_map)
ACTOR_RESTARTS = 8
TASK_RETRIES = 4
#: rounds in a row (a pass, then the isolation of its crashed chunks) that finish no chunk before the job gives up
IDLE_ROUNDS = 2
#: the ledger row of an input that killed its worker every time it ran
CRASH_STAGE = "decode"
CRASH_REASON = "crash"
CRASH_DETAIL = f"its worker process died {CRASH_LIMIT} times running this input alone (a native crash)"
#: the ledger row (stage ``read``, reason CRASH_REASON) of an input whose reading alone killed its worker every time
READ_CRASH_DETAIL = f"its worker process died {CRASH_LIMIT} times reading this input alone (a native crash)"
#: test-only fault hook (off unless set; forwarded to the workers like media/decoded.py's): reading a chunk whose
#: spec names a path containing this substring segfaults the reading process
READ_CRASH_ENV = "SMOLCURATE_TEST_READ_CRASH"


class WorkerFailureError(UserError):
    """Ray workers kept dying without finishing anything: the finished chunks stay staged for a rerun."""


def recipe_json(recipe: Recipe) -> str:
    """The recipe as validated JSON: small, so actor arguments stay inline rather than in the object store."""
    return json.dumps(recipe.model_dump(mode="json", exclude={"base_dir"}))  # nulls kept: null disables a check


# --------------------------------------------------------------------------- staged pipeline


class _StageActor:
    """Runs one stage of the layout in a Ray actor; the job rides on the class (see ``_stage_class``)."""

    RECIPE_JSON = "{}"
    BASE_DIR: str | None = None
    OUT_DIR = ""
    INDEX = 0
    LAST = True
    ATTEMPTS = ""  # name of the job's _Attempts actor ("" : no crash accounting)

    def __init__(self) -> None:
        import ray

        from curation.recipe import parse_recipe

        recipe = parse_recipe(json.loads(self.RECIPE_JSON), self.BASE_DIR, check_paths=False)
        self.runner = StageRunner(recipe, Staging(self.OUT_DIR, keep_local=False), self.INDEX, self.LAST)
        self.attempts = None
        if self.ATTEMPTS:
            for wait in (0.0, 0.5, 1.0, 2.0):
                time.sleep(wait)
                try:
                    self.attempts = ray.get_actor(self.ATTEMPTS)
                    break
                except ValueError:  # not (yet) known by that name
                    continue
                except ray.exceptions.RayError:  # gone with its node: Ray's bounded retries still apply
                    break

    def _starts(self, k: int) -> int:
        """Count this start of chunk ``k`` at this stage; returns how many there were (1 when not counted)."""
        import ray

        if self.attempts is None:
            return 1
        try:
            return int(ray.get(self.attempts.begin.remote(f"{self.INDEX}:{k}"), timeout=60))
        except ray.exceptions.RayError:
            return 1

    def _one(self, rec: dict[str, Any]) -> dict[str, Any]:
        k = int(rec["chunk"])
        if self._starts(k) > CRASH_LIMIT:  # its worker died CRASH_LIMIT times on it: the driver isolates it
            marker = json.dumps({_CRASHED: k, "stage": self.INDEX})
            return {"counts": marker} if self.LAST else {**_empty_record(rec), "counts": marker}
        if self.INDEX == 0:
            spec = json.loads(str(rec["spec"]))
            _test_read_fault(spec)
            state = self.runner.start(k, spec)
        else:
            state = ChunkState.from_record(rec)
        state = self.runner.run(state)
        if self.LAST:
            return {"counts": json.dumps(self.runner.finish(state))}
        return state.to_record()

    def __call__(self, batch):
        import pyarrow as pa

        out: list[dict[str, Any]] = []
        for rec in batch.to_pylist():
            counts = json.loads(rec.get("counts") or "{}")
            if _USER_ERROR in counts or _CRASHED in counts:  # an earlier stage's verdict travels on
                out.append(rec if not self.LAST else {"counts": rec["counts"]})
                continue
            try:
                out.append(self._one(rec))
            except UserError as exc:
                # Ray Data would wrap it in a UDF traceback; the driver re-raises it as the one-line error it is
                err = json.dumps({_USER_ERROR: str(exc), "class": type(exc).__name__})
                out.append({"counts": err} if self.LAST else {**_empty_record(rec), "counts": err})
        if self.LAST:
            return pa.table({"counts": pa.array([r["counts"] for r in out], pa.string())})
        return pa.table({
            "chunk": pa.array([int(r["chunk"]) for r in out], pa.int64()),
            "spec": pa.array([str(r["spec"]) for r in out], pa.string()),
            "kept": pa.array([r["kept"] for r in out], pa.large_binary()),
            "ledger": pa.array([r["ledger"] for r in out], pa.large_binary()),
            "counts": pa.array([r["counts"] for r in out], pa.string()),
        })


def _empty_record(rec: dict[str, Any]) -> dict[str, Any]:
    return {"chunk": rec["chunk"], "spec": rec["spec"], "kept": b"", "ledger": b""}


def _stage_class(recipe: Recipe, out_dir: str, stage: StageSpec, index: int, last: bool, attempts: str = "") -> type:
    """A subclass carrying the job and its stage in class attributes; Ray Data names the stage after it."""
    name = "Stage_" + "".join(ch if ch.isalnum() else "_" for ch in stage.name)
    return type(name, (_StageActor,), {
        "RECIPE_JSON": recipe_json(recipe), "BASE_DIR": recipe.base_dir, "OUT_DIR": str(out_dir),
        "INDEX": index, "LAST": last, "ATTEMPTS": attempts,
    })


def pool_plan(stages: list[StageSpec], workers: int, cluster_cpus: float, cluster_gpus: float) -> list[dict[str, Any]]:
    """Actors and per-actor Ray resources for each stage, fitting the cluster.

    Model stages get their declared pool and CPUs (scaled down when they would
    not leave half a CPU for the rest) and a GPU when the cluster has one and
    their device is ``auto`` or ``cuda``; the CPU stages share what is left,
    each with up to ``workers`` actors. Only Ray's
    accounting is scaled: an operator's thread count stays what it declared.
    """
    own = [s for s in stages if s.own]
    model_total = sum(s.num_cpus * (s.concurrency or 1) for s in own)
    scale = 1.0
    if model_total > max(0.5, cluster_cpus - 0.5):
        scale = max(0.5, cluster_cpus - 0.5) / model_total if cluster_cpus > 1 else 0.5 / model_total
    rest = max(0.5, cluster_cpus - model_total * scale)
    cpu_stages = [s for s in stages if not s.own]
    size = max(1, min(workers, int(rest)))
    per_actor = min(1.0, rest / (len(cpu_stages) * size)) if len(cpu_stages) > 1 else min(1.0, rest / size)
    plan = []
    for s in stages:
        if s.own:
            gpus = s.num_gpus
            if gpus == 0 and cluster_gpus > 0 and s.device in ("auto", "cuda"):
                gpus = 1.0
            plan.append({"stage": s.name, "pool": s.concurrency or 1, "num_cpus": round(s.num_cpus * scale, 3),
                         "num_gpus": gpus})
        else:
            plan.append({"stage": s.name, "pool": size, "num_cpus": round(per_actor, 3), "num_gpus": 0.0})
    return plan


# --------------------------------------------------------------------------- worker failure


def worker_failure(exc: BaseException) -> bool:
    """Whether ``exc``, or an error behind it, is a worker process or node dying rather than a bug or bad input."""
    import ray.exceptions as rx

    from curation.engine.ray_session import error_chain

    kinds = (rx.RayActorError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OutOfMemoryError,
             rx.LocalRayletDiedError)
    return any(isinstance(e, kinds) for e in error_chain(exc))


def _attempts_class() -> type:
    """The ``_Attempts`` actor's class, defined here so that Ray ships it by value: its worker then imports
    nothing of smolcurate (``import curation.engine`` alone costs about 0.9 s, all of it on the job's start)."""

    class _Attempts:
        """Starts of each (stage, chunk) over all the passes of one job.

        It lives on the head node (zero CPUs), so a worker node going away does not take the counts with it.
        """

        def __init__(self) -> None:
            self.starts: dict[str, int] = {}

        def begin(self, key: str) -> int:
            self.starts[key] = self.starts.get(key, 0) + 1
            return self.starts[key]

        def report(self) -> dict[str, int]:
            return self.starts

    return _Attempts


#: a resource only the head node has (Ray >= 2.7): the counts live where the cluster's own state does
_HEAD = "node:__internal_head__"


class _AttemptCounts:
    """The driver's handle on the job's ``_Attempts`` actor, named so that every stage actor (and its restarts)
    can look it up. Should the actor die anyway, a new one takes the name and the counts start over: Ray's
    bounded restarts and retries, and the bounded rounds, still end any loop."""

    def __init__(self) -> None:
        import uuid

        self.name = f"smolcurate-attempts-{uuid.uuid4().hex[:12]}"
        self.actor = self._start()

    def _start(self):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict[str, Any] = dict(name=self.name, num_cpus=0, max_restarts=0)
        if _HEAD in ray.cluster_resources():
            options["resources"] = {_HEAD: 0.001}
        else:  # pragma: no cover - an older Ray: the driver's node
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=True)
        # not waited for: the name is registered when .remote() returns, and the stage actors' first calls
        # queue until it is up, so its start overlaps theirs instead of adding to the job's fixed cost
        return ray.remote(_attempts_class()).options(**options).remote()

    def report(self) -> dict[str, int]:
        import ray

        try:
            return ray.get(self.actor.report.remote())
        except ray.exceptions.RayError as exc:
            log.warning("the crash counts were lost (%s); counting again", _first_line(exc))
            self.actor = self._start()
            return {}

    def close(self) -> None:
        import ray

        try:
            ray.kill(self.actor)
        except Exception:  # pragma: no cover - gone with the session
            pass


def read_poisoned(spec: dict) -> bool:
    """Whether the test-only read fault (READ_CRASH_ENV) hits this chunk spec: the spec names a path containing
    the poison's substring and, for a poison ``<substring>@<n>``, covers input ``n`` of its source (its
    ``pos0 <= n < pos0 + inputs``), so one sample of a shard or one row of a table can be poisoned."""
    poison = os.environ.get(READ_CRASH_ENV)
    if not poison:
        return False
    name, at, ordinal = poison.rpartition("@")
    if not (at and name and ordinal.isdigit()):
        return poison in json.dumps(spec)
    if name not in json.dumps(spec):
        return False
    from curation.readers import spec_inputs

    pos0 = int(spec.get("pos0", 0))
    return pos0 <= int(ordinal) < pos0 + spec_inputs(spec)


def _test_read_fault(spec: dict) -> None:
    """The test-only read fault (READ_CRASH_ENV): a segfault before reading a chunk that names the poisoned path."""
    if read_poisoned(spec):
        os.kill(os.getpid(), signal.SIGSEGV)


def narrowable(spec: dict) -> bool:
    """Whether the chunk's reader can read (and ledger unread) a subset of its inputs (``narrow``/``unread``)."""
    from curation.readers import reader_class

    cls = reader_class(spec["type"])
    return callable(getattr(cls, "narrow", None)) and callable(getattr(cls, "unread", None))


def narrowed(spec: dict, lo: int, hi: int) -> dict:
    """The chunk spec of inputs ``[lo, hi)`` of ``spec``."""
    from curation.readers import reader_class
    from curation.readers.base import decode_spec, encode_spec

    cls = reader_class(spec["type"])
    return encode_spec(spec["type"], cls.narrow(decode_spec(cls.spec_type, spec), lo, hi))


def _split_ledger(table: Any) -> tuple[Any, Any]:
    """(kept rows without the decision columns, ledger rows) of a table whose dropped rows are marked."""
    from curation.engine.chunk import to_ledger
    from curation.operators import DECISION_COLUMNS, split_decided

    kept, gone = split_decided(table)
    return kept.drop_columns([c for c in DECISION_COLUMNS if c in kept.column_names]), to_ledger(gone)


def _isolated(recipe_js: str, base_dir: str | None, k: int, spec: dict, lo: int, hi: int | None, mode: str,
              within: tuple[int, int] | None = None) -> dict:
    """One part of a crashed chunk in a single-use Ray task: every stage in this process, nothing staged.

    ``mode``: ``rows`` reads the chunk and sets up every operator on no row (a crash there is no decoded input's)
    and counts the rows; ``setup`` only sets up the operators (after ``rows`` crashed: is it the reading?);
    ``run`` runs rows ``[lo, hi)`` through every stage exactly as the pipeline would; ``crash`` ledgers rows
    ``[lo, hi)`` (read, never decoded) as ``decode/crash``; ``read`` reads only the inputs ``[lo, hi)`` of the
    chunk and runs them through every stage; ``unread`` ledgers the inputs ``[lo, hi)``, never opened, as
    ``read/crash``. With ``within`` (inputs ``[a, b)``, after a read bisection), ``rows``, ``run`` and ``crash``
    work on those inputs alone, as a chunk of their own: their rows, not the whole chunk's.
    """
    import pyarrow as pa

    from curation.engine.stages import stage_layout, table_bytes
    from curation.operators import mark_dropped
    from curation.readers import SourceContext, reader_class, spec_inputs
    from curation.readers.base import decode_spec
    from curation.recipe import parse_recipe

    try:
        recipe = parse_recipe(json.loads(recipe_js), base_dir, check_paths=False)
        n = len(stage_layout(recipe)[0])
        runners = [StageRunner(recipe, None, j, j == n - 1) for j in range(n)]
        if mode == "setup":
            for runner in runners:
                runner.ops(spec["source"])
            return {"rows": 0}
        if within is not None:
            spec = narrowed(spec, int(within[0]), int(within[1]))
        # read and unread: the inputs [lo, hi) as a chunk of their own; the other modes: the whole chunk, rows [lo, hi)
        part = narrowed(spec, lo, hi if hi is not None else spec_inputs(spec)) if mode in ("read", "unread") else spec
        if mode == "unread":
            cls = reader_class(spec["type"])
            table = cls().unread(SourceContext.of(recipe, spec["source"]), decode_spec(cls.spec_type, part),
                                 CRASH_REASON, READ_CRASH_DETAIL)
            kept, ledger = _split_ledger(table)
            counts = {"read": table.num_rows, "seconds": 0.0, "stages": {}, "kept": kept.num_rows,
                      "dropped": ledger.num_rows, _CRASHED: ledger.num_rows}
            return {"kept": table_bytes(kept), "ledger": table_bytes(ledger), "counts": counts}
        _test_read_fault(part)
        state = runners[0].start(k, part)
        total = state.kept.num_rows
        if mode == "rows":
            state.kept = state.kept.slice(0, 0)
            for runner in runners:
                state = runner.run(state)
            return {"rows": total}
        if mode != "read":
            hi = total if hi is None else min(hi, total)
            state.kept = state.kept.slice(lo, max(0, hi - lo))
            state.counts["read"] = state.kept.num_rows
        if mode == "crash":
            marked = mark_dropped(state.kept, pa.array([True] * state.kept.num_rows, pa.bool_()), CRASH_STAGE,
                                  CRASH_REASON, CRASH_DETAIL)
            kept, ledger = _split_ledger(marked)
            counts = {**state.counts, "kept": kept.num_rows, "dropped": ledger.num_rows, _CRASHED: ledger.num_rows}
        else:
            for runner in runners:
                state = runner.run(state)
            kept, ledger, counts = runners[-1].result(state)
        return {"kept": table_bytes(kept), "ledger": table_bytes(ledger), "counts": counts}
    except UserError as exc:
        return {_USER_ERROR: str(exc), "class": type(exc).__name__}


@dataclass(frozen=True)
class _Part:
    """A row (or input) range of a crashed chunk, how many workers it has killed on its own, and what to do with it."""

    k: int
    lo: int
    hi: int | None
    mode: str = "run"  # rows | setup | run | crash | read | unread (see _isolated)
    deaths: int = 0
    within: tuple[int, int] | None = None  # rows/run/crash of these inputs alone (a part of a read bisection)

    @property
    def order(self) -> tuple[int, int]:
        """Where the part's rows go in the merged chunk: (input, row within it) after a read bisection."""
        return (self.within[0], self.lo) if self.within is not None else (self.lo, -1)


class IsolationFailed(Exception):
    """A part that is no input's fault (the set-up, or a ledgering) kept killing its worker: ``what`` it did."""

    def __init__(self, part: _Part, what: str, death: BaseException) -> None:
        super().__init__(what)
        self.part, self.what, self.death = part, what, death


def bisect_chunks(specs: dict[int, dict], chunks: list[int], start: Callable[[_Part], None],
                  next_done: Callable[[], tuple[_Part, Any]],
                  stage: Callable[[int, list[tuple[Any, dict]]], None]) -> int:
    """Isolate crashed ``chunks``: the driver's loop, without Ray (``start`` runs a part somewhere, ``next_done``
    returns a finished one with its result, or the :class:`BaseException` of its worker's death; ``stage``
    takes a chunk's part results). Returns the inputs ledgered as crashes; raises :class:`IsolationFailed`.

    Bounded: every part dies at most CRASH_LIMIT times, and each transition narrows it (halves, or a chunk ->
    its inputs -> an input read alone -> its rows -> a row ledgered): ``rows`` (read the chunk, set up on no
    row) -> ``run`` halves -> ``crash``; when ``rows`` dies, ``setup`` -> ``read`` halves; a single input whose
    ``read`` dies is read alone with no decode (``rows`` within it, that death counted): if that dies too
    (CRASH_LIMIT deaths in all) the reading is at fault (``unread``: read/crash), else its rows are bisected
    (``run`` within it, a row that dies CRASH_LIMIT times alone: decode/crash). A read crash costs no more
    deaths than ledgering the input at once would; a decode crash found that way costs the bisection of its
    input's rows."""
    from curation.readers import spec_inputs

    results: dict[int, list[tuple[Any, dict]]] = {k: [] for k in chunks}
    open_parts = {k: 0 for k in chunks}
    crashed = 0

    def submit(part: _Part) -> None:
        start(part)
        open_parts[part.k] += 1

    def split(k: int, lo: int, hi: int, mode: str = "run", within: tuple[int, int] | None = None) -> None:
        if hi - lo <= 1:
            submit(_Part(k, lo, hi, mode, within=within))
        else:
            mid = (lo + hi) // 2
            submit(_Part(k, lo, mid, mode, within=within))
            submit(_Part(k, mid, hi, mode, within=within))

    for k in chunks:
        submit(_Part(k, 0, None, mode="rows"))
    while any(open_parts.values()):
        part, out = next_done()
        open_parts[part.k] -= 1
        if isinstance(out, BaseException):  # its worker died
            log.debug("isolation: chunk %d %s-%s (%s, within %s) killed its worker", part.k, part.lo, part.hi,
                      part.mode, part.within)
            last = part.deaths + 1 >= CRASH_LIMIT
            if part.mode in ("rows", "setup", "crash", "unread"):  # no input was decoded
                if not last:
                    submit(replace(part, deaths=part.deaths + 1))
                elif part.mode == "rows" and part.within is not None:  # one input read alone, no decode: the reading
                    submit(_Part(part.k, part.within[0], part.within[1], mode="unread"))
                elif part.mode == "rows" and narrowable(specs[part.k]):  # the reading, or the set-up?
                    submit(_Part(part.k, 0, None, mode="setup"))
                else:
                    raise IsolationFailed(part, "setting up the operators" if part.mode == "setup" else
                                          "reading it, or setting up the operators", out)
            elif part.hi - part.lo > 1:  # run or read: halves
                split(part.k, part.lo, part.hi, part.mode, part.within)
            elif part.mode == "read":  # one input: its reading, or a decode of its rows? read it alone, no decode
                # (this death counts: a death of that read too makes CRASH_LIMIT reading the input alone)
                submit(_Part(part.k, 0, None, mode="rows", deaths=part.deaths + 1, within=(part.lo, part.hi)))
            elif not last:
                submit(replace(part, deaths=part.deaths + 1))
            else:
                submit(replace(part, mode="crash", deaths=0))
            continue
        if part.mode == "rows":
            split(part.k, 0, int(out["rows"]), "run", part.within)
            continue
        if part.mode == "setup":  # the operators set up fine: the reading kills; bisect the inputs
            split(part.k, 0, spec_inputs(specs[part.k]), "read")
            continue
        results[part.k].append((part.order, out))
        crashed += int(out["counts"].get(_CRASHED, 0))
        if open_parts[part.k] == 0:
            stage(part.k, results.pop(part.k))
    return crashed


def merge_parts(recipe: Recipe, k: int, spec: dict, parts: list[tuple[Any, dict]]) -> tuple[Any, Any, dict[str, Any]]:
    """(kept rows, ledger rows, counts) of a chunk from the results of its row (or input) ranges, in the order of
    their keys (a row, or an ``_Part.order``), as one run would stage it."""
    import pyarrow as pa

    from curation.engine.stages import bytes_table, concat_ledgers
    from curation.readers import spec_inputs

    parts = sorted(parts, key=lambda p: p[0])
    kepts = [bytes_table(out["kept"]) for _, out in parts]
    full = [t for t in kepts if t.num_rows] or [max(kepts, key=lambda t: t.num_columns)]
    kept = pa.concat_tables(full, promote_options="default") if len(full) > 1 else full[0]
    ledger = concat_ledgers([bytes_table(out["ledger"]) for _, out in parts])
    counts = {
        "chunk": k, "source": recipe.sources[spec["source"]].name, "inputs": spec_inputs(spec),
        "read": sum(out["counts"]["read"] for _, out in parts),
        "seconds": round(sum(out["counts"]["seconds"] for _, out in parts), 4), "stages": {},
        "kept": kept.num_rows, "dropped": ledger.num_rows,
        "isolated": len(parts), _CRASHED: sum(out["counts"].get(_CRASHED, 0) for _, out in parts),
    }
    return kept, ledger, counts


def _raise_if_not_shipped(exc: BaseException) -> None:
    """A worker that could not import smolcurate (a node the probe did not reach in time): the one-line advice."""
    from curation.engine.ray_session import SHIP_HINT, missing_module

    problem = missing_module(exc)
    if problem and any(name in problem for name in ("'curation", "'media", "'manifests", "'tokenization")):
        raise UserError(f"Ray workers cannot import smolcurate ({problem}); {SHIP_HINT}", field="--ray-address") \
            from None


def _raise_user_error(out: dict[str, Any]) -> None:
    if _USER_ERROR in out:
        raise _USER_ERRORS.get(out["class"], UserError)(out[_USER_ERROR])


# --------------------------------------------------------------------------- the engine


class RayEngine:
    """Ray Data on an embedded local Ray, or on the cluster at ``--ray-address`` / ``RAY_ADDRESS``."""

    name = "ray"

    def __init__(self) -> None:
        self.workers = 1

    def start(self, address: str | None, workers: int | None) -> int:
        from curation.engine.ray_session import check_workers, cluster_cpus, init_ray

        if not init_ray(address, None, quiet=True):  # a Ray this process did not start: can its workers import us?
            check_workers()  # workers that lack smolcurate: one line saying how to ship it, before any work
        self.workers = min(workers or cluster_cpus(), cluster_cpus())
        return self.workers

    def gpus(self) -> int:
        import ray

        return int(ray.cluster_resources().get("GPU", 0))

    def map_fn(self):
        from curation.dedup.parallel import ray_map

        return ray_map

    def run(self, recipe: Recipe, staging: Staging, stages: list[StageSpec],
            pending: list[tuple[int, dict]], on_done: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Rounds of (a pipeline pass over the chunks not finished, then the isolation of the chunks that crashed
        their workers) until every chunk is staged; a round that finishes nothing twice in a row ends the job."""
        import ray

        from curation.engine.ray_session import _quiet_ray_data

        _quiet_ray_data(True)
        plan = self._plan(stages)
        info: dict[str, Any] = {"stages": [s.as_dict() | p for s, p in zip(stages, plan)]}
        if not pending:
            return info
        specs = dict(pending)
        attempts = _AttemptCounts()
        pids: dict[str, set[int]] = {}
        stats: list[str] = []
        suspects: set[int] = set()
        failures = {"rounds": 0, "failed_passes": 0, "isolated": [], "crashed": 0}
        idle = 0
        try:
            while True:
                failures["rounds"] += 1
                done = staging.finished()
                before = len(done & specs.keys())
                todo = [(k, spec) for k, spec in pending if k not in done and k not in suspects]
                error: BaseException | None = None
                if failures["rounds"] > 1:  # after a failure: pools sized for the cluster as it is now
                    plan = self._plan(stages)
                if todo:
                    try:
                        stats.append(self._pass(recipe, staging, stages, plan, todo, attempts.name, suspects, pids,
                                                on_done))
                    except Exception as exc:  # noqa: BLE001 - only worker deaths are retried; the rest re-raise
                        _raise_if_not_shipped(exc)
                        if not worker_failure(exc):
                            raise
                        error = exc
                        failures["failed_passes"] += 1
                        log.warning("a Ray worker died and the pass failed (%s); the chunks not finished run again",
                                    _first_line(exc))
                starts = attempts.report()
                done = staging.finished()
                for key, n in starts.items():  # a failed pass: the chunks that died CRASH_LIMIT times are isolated
                    k = int(key.partition(":")[2])
                    if n >= CRASH_LIMIT and k in specs and k not in done:
                        suspects.add(k)
                crashed = sorted(k for k in suspects if k not in done)
                if crashed:
                    failures["isolated"] += crashed
                    failures["crashed"] += self._isolate(recipe, staging, plan, specs, crashed, on_done)
                done = staging.finished()
                if all(k in done for k in specs):
                    break
                idle = idle + 1 if len(done & specs.keys()) == before else 0
                if idle >= IDLE_ROUNDS:
                    left = len(specs.keys() - done)
                    why = _first_line(error) if error is not None else "chunks did not finish"
                    raise WorkerFailureError(
                        f"Ray workers kept failing ({why}); {left} chunks are not finished, the others are staged: "
                        "rerun the same command to resume")
        finally:
            attempts.close()
        for s in info["stages"]:
            s["pids"] = sorted(pids.get(s["name"], ()))
        info["ray_stats"] = "\n".join(stats)
        info["failures"] = failures
        return info

    def _plan(self, stages: list[StageSpec]) -> list[dict[str, Any]]:
        import ray

        resources = ray.cluster_resources()
        cpus = float(resources.get("CPU", 1))
        return pool_plan(stages, max(1, min(self.workers, int(cpus))), cpus, float(resources.get("GPU", 0)))

    def _pass(self, recipe: Recipe, staging: Staging, stages: list[StageSpec], plan: list[dict[str, Any]],
              todo: list[tuple[int, dict]], attempts_name: str, suspects: set[int], pids: dict[str, set[int]],
              on_done: Callable[[dict[str, Any]], None]) -> str:
        """One Ray Data pass over ``todo``; chunks handed back as crashed go to ``suspects``; returns the stats."""
        import ray
        import ray.data

        from curation.engine.ray_session import worker_runtime_env

        out_dir = str(staging.out)  # a folder or an object-store URI: each actor stages to it
        items = [{"chunk": k, "spec": json.dumps(spec)} for k, spec in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        env = worker_runtime_env()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for j, (stage, p) in enumerate(zip(stages, plan)):
                kwargs: dict[str, Any] = dict(
                    batch_size=1, batch_format="pyarrow", zero_copy_batch=True,
                    compute=ray.data.ActorPoolStrategy(size=max(1, min(p["pool"], len(items)))),
                    num_cpus=p["num_cpus"],
                )
                if p["num_gpus"]:
                    kwargs["num_gpus"] = p["num_gpus"]
                cls = _stage_class(recipe, out_dir, stage, j, j == len(stages) - 1, attempts_name)
                # a dead actor is restarted (on another node if its own went away) and its chunk retried there;
                # a chunk that keeps killing its workers comes back as a crashed record (CRASH_LIMIT), not a loop
                remote = dict(max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES)
                if env:
                    remote["runtime_env"] = env
                try:
                    ds = ds.map_batches(cls, **remote, **kwargs)
                except TypeError:  # a Ray without per-call remote args
                    ds = ds.map_batches(cls, **kwargs)
        with _ray_data_tracebacks_off():  # a worker death is reported in one line by run(), or re-raised
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                for record in batch.column("counts").to_pylist():
                    counts = json.loads(record)
                    _raise_user_error(counts)
                    if _CRASHED in counts:
                        suspects.add(int(counts[_CRASHED]))
                        continue
                    for j, st in (counts.get("stages") or {}).items():
                        pids.setdefault(stages[int(j)].name, set()).add(int(st["pid"]))
                    on_done(counts)
        try:
            return ds.stats()
        except Exception:  # pragma: no cover - stats are informative only
            return ""

    def _isolate(self, recipe: Recipe, staging: Staging, plan: list[dict[str, Any]], specs: dict[int, dict],
                 chunks: list[int], on_done: Callable[[dict[str, Any]], None]) -> int:
        """Bisect the rows of ``chunks`` in single-use tasks, stage each chunk merged; returns the inputs ledgered
        as ``decode/crash`` or ``read/crash``. Each chunk is first read and its operators set up on no row. When
        that kills its worker CRASH_LIMIT times, the operators are set up alone: a crash there is not an input's
        and ends the job (else a broken setup would ledger every input); if they set up fine, the reading is at
        fault, and a reader that can read a subset of a chunk's inputs (``narrow``/``unread``: files, table
        ranges, WebDataset shards) has its inputs bisected instead of the rows; an input whose part dies is read
        alone without a decode: when that kills CRASH_LIMIT workers it is ledgered unread as ``read/crash``, else
        its rows are bisected, a row that kills CRASH_LIMIT workers alone being ``decode/crash`` (other
        readers: the job ends). A part of several rows or inputs that kills its worker is split in halves at
        once (a retry of an innocent part costs no more than its halves). The loop is :func:`bisect_chunks`."""
        import ray

        from curation.engine.ray_session import worker_runtime_env

        options: dict[str, Any] = dict(num_cpus=max(p["num_cpus"] for p in plan), max_retries=0)
        if any(p["num_gpus"] for p in plan):
            options["num_gpus"] = max(p["num_gpus"] for p in plan)
        env = worker_runtime_env()
        if env:
            options["runtime_env"] = env
        task = ray.remote(_isolated).options(**options)
        js = recipe_json(recipe)
        inflight: dict[Any, _Part] = {}

        def start(part: _Part) -> None:
            ref = task.remote(js, recipe.base_dir, part.k, specs[part.k], part.lo, part.hi, part.mode, part.within)
            inflight[ref] = part

        def next_done() -> tuple[_Part, Any]:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            part = inflight.pop(ready[0])
            try:
                out = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - only worker deaths are bisected; the rest re-raise
                _raise_if_not_shipped(exc)
                if not worker_failure(exc):
                    raise
                return part, exc
            _raise_user_error(out)
            return part, out

        def stage(k: int, parts: list[tuple[Any, dict]]) -> None:
            kept, ledger, counts = merge_parts(recipe, k, specs[k], parts)
            staging.write_chunk(k, kept, ledger, counts)
            on_done(counts)

        try:
            crashed = bisect_chunks(specs, chunks, start, next_done, stage)
        except IsolationFailed as failed:
            src = recipe.sources[specs[failed.part.k]["source"]].name
            raise WorkerFailureError(
                f"chunk {failed.part.k} of source {src!r} kills its worker before any input is decoded "
                f"({failed.what}: {_first_line(failed.death)}); the other chunks are staged: rerun to resume") from None
        if crashed:
            log.warning("%d inputs killed their worker every time they ran; ledgered as %s/%s (or read/%s)", crashed,
                        CRASH_STAGE, CRASH_REASON, CRASH_REASON)
        return crashed


@contextmanager
def _ray_data_tracebacks_off():
    """While quiet (Ray Data's loggers at ERROR, curation.engine.ray_session), a failed pass does not print Ray
    Data's tracebacks to the terminal: the driver retries the pass, or re-raises the error itself."""
    logger = logging.getLogger("ray.data")
    level = logger.level
    if level == logging.ERROR:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException | None) -> str:
    text = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    return text.strip().splitlines()[0][:300] if text.strip() else ""
