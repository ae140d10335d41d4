"""Token counts under a tokenization strategy, as a curation operator (the tokenization package does the counting)."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from curation.operators import Operator

TOKEN_SCORES: dict[str, pa.DataType] = {"tokens_visual": pa.int64(), "tokens_text": pa.int64(), "tokens": pa.int64()}


class TokenCounter(Operator):
    """Adds ``tokens_visual``, ``tokens_text`` and ``tokens`` from media sizes and text; drops nothing.

    Exact text counts with a tokenizer (loaded once per worker in ``setup``),
    estimates without one. Media sizes come from the analyzers earlier in the
    chain, so no file is opened again.
    """

    stage = "tokens"
    columns = TOKEN_SCORES

    def __init__(self, strategy: str, tokenizer: str | None = None, overrides: dict[str, Any] | None = None) -> None:
        self.strategy_name = strategy
        self.tokenizer_spec = tokenizer
        self.overrides = dict(overrides or {})
        self._strategy = None
        self._tokenizer = None

    def setup(self) -> None:
        from tokenization.base_tokenizer import load_tokenizer
        from tokenization.strategy import get_strategy

        self._strategy = get_strategy(self.strategy_name, **self.overrides)
        self._tokenizer = load_tokenizer(self.tokenizer_spec) if self.tokenizer_spec else None

    def __call__(self, table: pa.Table) -> pa.Table:
        from tokenization.budget import token_counts

        if self._strategy is None:
            self.setup()
        counts = token_counts(table, self._strategy, self._tokenizer)
        for name in TOKEN_SCORES:
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(pa.field(name, pa.int64()), counts.column(name))
        return table
