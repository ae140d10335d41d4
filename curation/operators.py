"""The operator contract: every stage of a job is an Arrow-table -> Arrow-table map.

An operator adds columns (metadata, scores, signatures) and may mark rows as
dropped by filling the three private decision columns below. It never removes
rows itself: the engine moves marked rows to the ledger after each operator, so
both engines (in-process and Ray) run the same operator code unchanged and
every input stays accounted for.

Two shapes are accepted:
- a plain function ``fn(table) -> table``, or
- a class deriving from :class:`Operator`, whose ``setup()`` runs once per
  worker (a Ray actor on the Ray engine) before the first batch.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Union

import pyarrow as pa
import pyarrow.compute as pc

DROP_REASON = "_drop_reason"
DROP_STAGE = "_drop_stage"
DROP_DETAIL = "_drop_detail"
DECISION_COLUMNS = (DROP_REASON, DROP_STAGE, DROP_DETAIL)


class Operator:
    """Base class for operators with per-worker setup and declared output columns."""

    #: ledger stage name for rows this operator drops
    stage: ClassVar[str] = "op"
    #: extension columns (name -> Arrow type) this operator writes into the manifest
    columns: ClassVar[dict[str, pa.DataType]] = {}

    # Resources. An operator that needs none of its own (num_gpus == 0, concurrency None,
    # batch_size None) is fused with its neighbours into one CPU stage; any other runs as its
    # own stage (its own actor pool on Ray). Instances may override these from their config.
    #: CPUs one worker of this operator holds
    num_cpus: float = 1.0
    #: GPUs one worker holds (a model operator sets 1 when it runs on CUDA)
    num_gpus: float = 0.0
    #: rows per call; None: the whole chunk at once
    batch_size: int | None = None
    #: workers in this operator's own pool; None: fused into the shared CPU stage
    concurrency: int | None = None

    def setup(self) -> None:
        """Load models, open handles: runs once per worker before any batch."""

    def __call__(self, table: pa.Table) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError


OperatorLike = Union[Operator, Callable[[pa.Table], pa.Table]]


def ensure_decision_columns(table: pa.Table) -> pa.Table:
    """Add empty decision columns to a batch that has none yet."""
    for name in DECISION_COLUMNS:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, pa.string()))
    return table


def mark_dropped(
    table: pa.Table,
    mask: pa.Array | pa.ChunkedArray,
    stage: str,
    reason: str | pa.Array,
    detail: str | pa.Array | None = None,
) -> pa.Table:
    """Mark rows where `mask` is true as dropped, keeping the first decision of rows already marked."""
    table = ensure_decision_columns(table)
    mask = pc.fill_null(mask, False)
    fresh = pc.and_(mask, pc.is_null(table.column(DROP_REASON)))

    def _put(name: str, value) -> pa.Table:
        current = table.column(name)
        if value is None:
            return table
        new = value if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.scalar(value, pa.string())
        idx = table.column_names.index(name)
        return table.set_column(idx, name, pc.if_else(fresh, new, current))

    table = _put(DROP_STAGE, stage)
    table = _put(DROP_REASON, reason)
    table = _put(DROP_DETAIL, detail)
    return table


def split_decided(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split a batch into (kept rows, dropped rows) by the decision columns."""
    table = ensure_decision_columns(table)
    dropped_mask = pc.is_valid(table.column(DROP_REASON))
    return table.filter(pc.invert(dropped_mask)), table.filter(dropped_mask)
