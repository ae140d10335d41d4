"""The chain's first operator: decode every input of the chunk once, for all the operators after it."""
from __future__ import annotations

import pyarrow as pa

from curation.filters.common import STAGE_DECODE
from curation.operators import Operator
from media.decoded import SharedDecode


class DecodeMedia(Operator):
    """Fills the chain's :class:`~media.decoded.SharedDecode` for a chunk; adds no column, drops nothing.

    The analyzers, signatures and verification thumbnails read that shared
    decode; failures are ledgered by the analyzers (stage ``decode``) that
    read them, so a row keeps one reason whichever operator looks first.
    """

    stage = STAGE_DECODE
    columns: dict[str, pa.DataType] = {}

    def __init__(self, shared: SharedDecode) -> None:
        self.shared = shared

    def __call__(self, table: pa.Table) -> pa.Table:
        self.shared.prepare(table)
        return table
