"""The stage layout of a job: cheap CPU operators fused, each model operator a stage of its own.

Every source's operator chain (``curation.filters.source_operators``) is cut at
its own-stage operators (model operators: ``own_stage = True``). The layout is
the same for every source of a recipe, so one pipeline serves them all:

    cpu:0  ->  embed  ->  cpu:1  ->  language  ->  cpu:2

A source an operator does not apply to passes through that stage unchanged.
The first stage reads the chunk, the last one stages it; in between a chunk
travels as one record holding its kept rows and its ledger rows as Arrow IPC
bytes, so both engines run exactly the same operator calls on the same
batches (hence identical output).
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curation.engine.chunk import STAGED_LEDGER_SCHEMA, apply_operators
from curation.engine.staging import Staging
from curation.filters import source_operators
from curation.operators import DECISION_COLUMNS
from curation.readers import PRIVATE_POS, read_chunk, spec_inputs
from curation.recipe import Recipe

CPU = "cpu"


@dataclass
class StageSpec:
    """One stage of the pipeline: its name, what each worker holds, and its pool size."""

    name: str
    own: bool  # a model stage (own pool, own resources) rather than fused CPU operators
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    concurrency: int | None = None  # workers of an own stage; CPU stages get the job's workers
    device: str = "cpu"  # an own stage's configured device: auto, cpu or cuda
    ops: list[str] = field(default_factory=list)  # operator class names (for stats)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "own": self.own, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "concurrency": self.concurrency, "device": self.device, "ops": list(self.ops)}


def _own(op: Any) -> bool:
    return bool(getattr(op, "own_stage", False))


def _op_name(op: Any) -> str:
    return getattr(op, "section", None) or type(op).__name__


def _registry_rank(name: str) -> int:
    """Position of a model stage (a section name, or an operator class name) in the enrich registry."""
    from curation.enrich.registry import ENRICHERS

    for k, (section, target) in enumerate(ENRICHERS.items()):
        if name in (section, target.rpartition(":")[2]):
            return k
    return len(ENRICHERS)


def split_chain(ops: list[Any], own_names: list[str]) -> list[list[Any]]:
    """Cut one source's chain into the job's slots: cpu:0, own[0], cpu:1, own[1], ..., cpu:n."""
    slots: list[list[Any]] = [[] for _ in range(2 * len(own_names) + 1)]
    cpu_slot = 0
    for op in ops:
        if _own(op):
            j = own_names.index(_op_name(op))
            slots[2 * j + 1].append(op)
            cpu_slot = 2 * j + 2
        else:
            slots[cpu_slot].append(op)
    return slots


def stage_layout(recipe: Recipe) -> tuple[list[StageSpec], list[list[list[Any]]]]:
    """The job's stages and, per source, its operators in each stage (instances, not set up)."""
    chains = [source_operators(recipe, i) for i in range(len(recipe.sources))]
    own_ops: dict[str, Any] = {}  # first appearance; every chain lists model operators in registry order
    for chain in chains:
        for op in chain:
            if _own(op) and _op_name(op) not in own_ops:
                own_ops[_op_name(op)] = op
    own_names = sorted(own_ops, key=_registry_rank)
    per_source = [split_chain(chain, own_names) for chain in chains]
    stages: list[StageSpec] = []
    for j in range(2 * len(own_names) + 1):
        names = sorted({type(op).__name__ for src in per_source for op in src[j]})
        if j % 2 == 0:
            stages.append(StageSpec(f"{CPU}:{j // 2}", False, ops=names))
        else:
            op = own_ops[own_names[j // 2]]
            stages.append(StageSpec(own_names[j // 2], True, float(getattr(op, "num_cpus", 1.0)),
                                    float(getattr(op, "num_gpus", 0.0)), int(getattr(op, "concurrency", None) or 1),
                                    getattr(getattr(op, "cfg", None), "device", "cpu"), ops=names))
    return stages, per_source


# --------------------------------------------------------------------------- chunk records


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def bytes_table(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


@dataclass
class ChunkState:
    """A chunk between stages: its rows still in the chain, its ledger so far, and its counts."""

    k: int
    spec: dict
    kept: pa.Table
    ledgers: list[pa.Table]
    counts: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        import json

        ledger = concat_ledgers(self.ledgers)
        return {"chunk": self.k, "spec": json.dumps(self.spec), "kept": table_bytes(self.kept),
                "ledger": table_bytes(ledger), "counts": json.dumps(self.counts)}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "ChunkState":
        import json

        return cls(int(rec["chunk"]), json.loads(str(rec["spec"])), bytes_table(bytes(rec["kept"])),
                   [bytes_table(bytes(rec["ledger"]))], json.loads(str(rec["counts"])))


def concat_ledgers(ledgers: list[pa.Table]) -> pa.Table:
    """One chunk's ledger from its parts (stages, or isolated row ranges), in input order."""
    parts = [t for t in ledgers if t.num_rows] or [STAGED_LEDGER_SCHEMA.empty_table()]
    ledger = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
    if ledger.num_rows > 1:
        ledger = ledger.sort_by(PRIVATE_POS)
    return ledger


class StageRunner:
    """Runs one stage of the layout for any source: set-up operator chains, built once per worker."""

    def __init__(self, recipe: Recipe, staging: Staging | None, index: int, last: bool) -> None:
        self.recipe = recipe
        self.staging = staging
        self.index = index
        self.last = last
        self._ops: dict[int, list[Any]] = {}
        self._per_source: list[list[list[Any]]] | None = None

    def ops(self, source: int) -> list[Any]:
        if source not in self._ops:
            if self._per_source is None:
                self._per_source = stage_layout(self.recipe)[1]
            ops = self._per_source[source][self.index]
            for op in ops:
                if hasattr(op, "setup"):  # every Operator has one; plain callables may not
                    op.setup()
            self._ops[source] = ops
        return self._ops[source]

    def start(self, k: int, spec: dict) -> ChunkState:
        """Stage 0's input: read the chunk."""
        t0 = time.perf_counter()
        table = read_chunk(self.recipe, spec)
        counts = {"chunk": k, "source": self.recipe.sources[spec["source"]].name, "inputs": spec_inputs(spec),
                  "read": table.num_rows, "seconds": round(time.perf_counter() - t0, 4), "stages": {}}
        return ChunkState(k, spec, table, [], counts)

    def run(self, state: ChunkState) -> ChunkState:
        t0 = time.perf_counter()
        ops = self.ops(state.spec["source"])
        if ops and state.kept.num_rows:
            kept, ledger = apply_operators(state.kept, ops)
            state.kept = kept
            state.ledgers.append(ledger)
        elif self.last:
            state.kept = state.kept.drop_columns([c for c in DECISION_COLUMNS if c in state.kept.column_names])
        dt = time.perf_counter() - t0
        state.counts["seconds"] = round(state.counts["seconds"] + dt, 4)
        state.counts["stages"][str(self.index)] = {"pid": os.getpid(), "seconds": round(dt, 4)}
        return state

    def result(self, state: ChunkState) -> tuple[pa.Table, pa.Table, dict[str, Any]]:
        """The last stage's output unstaged: (kept rows, ledger rows, counts); the Ray engine's crash
        isolation merges the results of a chunk's parts before staging it (curation.engine.ray_engine)."""
        ledger = concat_ledgers(state.ledgers)
        kept = state.kept.drop_columns([c for c in DECISION_COLUMNS if c in state.kept.column_names])
        return kept, ledger, {**state.counts, "kept": kept.num_rows, "dropped": ledger.num_rows}

    def finish(self, state: ChunkState) -> dict[str, Any]:
        """The last stage's output: stage the chunk, return its counts."""
        kept, ledger, counts = self.result(state)
        assert self.staging is not None
        self.staging.write_chunk(state.k, kept, ledger, counts)
        return counts

