"""Operators over one chunk's rows and the ledger rows they produce; the stages of both engines call it.

(The stage layout and the chunk's trip through the stages: :mod:`curation.engine.stages`.)
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.operators import DECISION_COLUMNS, DROP_DETAIL, DROP_REASON, DROP_STAGE, split_decided
from curation.readers import PRIVATE_KEY, PRIVATE_POS, PRIVATE_URI

LEDGER_COLUMNS = ("id", "source", "stage", "reason", "detail", "uri", PRIVATE_POS, PRIVATE_KEY)
STAGED_LEDGER_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
    ("detail", pa.string()), ("uri", pa.string()), (PRIVATE_POS, pa.int64()), (PRIVATE_KEY, pa.string()),
])


def to_ledger(dropped: pa.Table) -> pa.Table:
    """Ledger rows from rows marked dropped: the decision, then every column the row had so far.

    A v2 ledger row keeps its modality, media references, text and every score computed before it
    was dropped (so a notebook can show it and ``retune`` can loosen a threshold without reading
    media); dedup signatures (``sig_*``) are left out. The private ordering/key columns ride along.
    """
    if dropped.num_rows == 0:
        return STAGED_LEDGER_SCHEMA.empty_table()
    base = {
        "id": dropped.column("id"), "source": dropped.column("source"),
        "stage": dropped.column(DROP_STAGE), "reason": dropped.column(DROP_REASON),
        "detail": dropped.column(DROP_DETAIL), "uri": dropped.column(PRIVATE_URI),
        PRIVATE_POS: dropped.column(PRIVATE_POS), PRIVATE_KEY: dropped.column(PRIVATE_KEY),
    }
    table = pa.table(base, schema=STAGED_LEDGER_SCHEMA)
    for name in dropped.column_names:
        if name in base or name in DECISION_COLUMNS or name == PRIVATE_URI or name.startswith("sig_"):
            continue
        table = table.append_column(dropped.schema.field(name), dropped.column(name))
    return table


def apply_operators(table: pa.Table, ops: list[Any]) -> tuple[pa.Table, pa.Table]:
    """(kept rows, ledger rows): marked rows leave the chain after each operator."""
    kept, dropped = split_decided(table)
    ledgers = [to_ledger(dropped)]
    for op in ops:
        if kept.num_rows == 0:
            break
        kept, dropped = split_decided(op(kept))
        if dropped.num_rows:
            stage = getattr(op, "stage", "op")
            if pc.any(pc.is_null(dropped.column(DROP_STAGE))).as_py():
                dropped = dropped.set_column(dropped.column_names.index(DROP_STAGE), DROP_STAGE,
                                             pc.fill_null(dropped.column(DROP_STAGE), stage))
            ledgers.append(to_ledger(dropped))
    kept = kept.drop_columns([c for c in DECISION_COLUMNS if c in kept.column_names])
    ledger = pa.concat_tables(ledgers, promote_options="default")  # later stages' ledgers carry more scores
    if ledger.num_rows > 1:
        ledger = ledger.sort_by(PRIVATE_POS)
    return kept, ledger
