"""Shared pieces of the filter operators: vectorized threshold checks and media-list plumbing."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.operators import DROP_REASON, Operator, ensure_decision_columns, mark_dropped
from manifests.schema import MEDIA_TYPE

MEDIA_LIST = pa.list_(MEDIA_TYPE)

#: ledger stages written by curation (dedup adds its own)
STAGE_READ = "read"
STAGE_DECODE = "decode"
STAGE_FILTER = "filter"


def set_column(table: pa.Table, name: str, values: pa.Array | pa.ChunkedArray | np.ndarray | list, type: pa.DataType | None = None) -> pa.Table:
    """Replace or append a column."""
    if isinstance(values, np.ndarray):
        arr = pa.array(values, type=type) if type is not None else pa.array(values)
    elif isinstance(values, list):
        arr = pa.array(values, type=type)
    else:
        arr = values.cast(type) if type is not None and not values.type.equals(type) else values
    idx = table.schema.get_field_index(name)
    if idx >= 0:
        return table.set_column(idx, name, arr)
    return table.append_column(name, arr)


def undecided(table: pa.Table) -> np.ndarray:
    """Boolean mask of rows no earlier check has dropped."""
    table = ensure_decision_columns(table)
    return ~np.asarray(pc.is_valid(table.column(DROP_REASON)).to_numpy(zero_copy_only=False), dtype=bool)


def _fmt(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Numbers as short strings for ledger details (rounded floats)."""
    if pa.types.is_floating(values.type):
        values = pc.round(values, 4)
    return pc.cast(values, pa.string())


def check(
    table: pa.Table,
    column: str,
    op: str,
    threshold: Any,
    stage: str,
    reason: str,
    label: str | None = None,
) -> pa.Table:
    """Drop rows whose ``column`` fails ``column OP threshold`` (``op`` is the *keep* condition).

    A null threshold disables the check; null scores pass (nothing was
    measured, e.g. a page size of a document image). The ledger detail reads
    like ``score_min_side 20 < 32``.
    """
    if threshold is None or column not in table.column_names or table.num_rows == 0:
        return table
    values = table.column(column)
    as_float = pc.cast(values, pa.float64())
    cmp = {">=": pc.greater_equal, "<=": pc.less_equal, ">": pc.greater, "<": pc.less}[op]
    keep = cmp(as_float, pa.scalar(float(threshold)))
    failed = pc.fill_null(pc.invert(keep), False)
    if not pc.any(failed).as_py():
        return table
    inverse = {">=": "<", "<=": ">", ">": "<=", "<": ">="}[op]
    detail = pc.binary_join_element_wise(pc.cast(pa.scalar(f"{label or column} "), pa.string()), _fmt(values),
                                         pa.scalar(f" {inverse} {threshold}"), "")
    return mark_dropped(table, failed, stage, reason, detail)


def drop_rows(table: pa.Table, failures: dict[int, tuple[str, str]], stage: str) -> pa.Table:
    """Mark rows given as {row: (reason, detail)} as dropped (for per-file decode failures)."""
    if not failures:
        return ensure_decision_columns(table)
    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    for i, (reason, detail) in failures.items():
        mask[i] = True
        reasons[i] = reason
        details[i] = detail
    return mark_dropped(table, pa.array(mask), stage, pa.array(reasons, pa.string()), pa.array(details, pa.string()))


def media_column(table: pa.Table) -> list[list[dict] | None]:
    return table.column("media").to_pylist()


def put_media(table: pa.Table, media: Iterable[list[dict] | None]) -> pa.Table:
    return set_column(table, "media", pa.array(list(media), type=MEDIA_LIST))


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: the usual blur measure (low = blurry)."""
    g = np.asarray(grey)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    if g.dtype == np.uint8:  # 8-bit grey: the Laplacian in integers, its variance from exact integer sums
        g = g.astype(np.int32)
        lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
        return _variance(lap)
    g = g.astype(np.float32, copy=False)
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def low_info_score(grey: np.ndarray) -> float:
    """1 - min(1, std/32) of grey levels: 1.0 for a constant image, 0 once contrast is ordinary."""
    g = np.asarray(grey)
    if g.size == 0:
        return 1.0
    std = np.sqrt(_variance(g)) if g.dtype == np.uint8 else float(g.astype(np.float32, copy=False).std())
    return float(max(0.0, 1.0 - std / 32.0))


def _variance(x: np.ndarray) -> float:
    """Population variance of an integer array from its exact integer sum and sum of squares.

    Two integer reductions instead of ``ndarray.var`` (a mean, a subtraction
    and a float reduction behind several Python calls): the analyzers score
    every image with it, and the wrapper cost more than the arithmetic on
    128-pixel images. Exact, so the same on every machine.
    """
    v = x.reshape(-1).astype(np.int64, copy=False)
    n = v.size
    s = int(v.sum())
    s2 = int(v @ v)
    return (s2 * n - s * s) / (n * n)


class ThresholdFilter(Operator):
    """Threshold checks declared as data: (score column, keep condition, config key).

    The config key is also the ledger reason, so a dropped row says which
    threshold it failed; a null threshold in the config disables that check.
    """

    stage = STAGE_FILTER
    columns: ClassVar[dict[str, pa.DataType]] = {}
    CHECKS: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def __call__(self, table: pa.Table) -> pa.Table:
        for column, op, key in self.CHECKS:
            table = check(table, column, op, getattr(self.cfg, key), self.stage, key)
        return table
