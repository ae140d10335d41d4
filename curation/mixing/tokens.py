"""Token counts per row under a tokenization strategy, for token-weighted shares.

Counts come from :func:`tokenization.budget.token_counts` over metadata leaves
(media sizes and durations, text and turn contents), batch by batch. An input
whose manifest already carries a ``tokens`` column made under the same strategy
(``extra.tokenization`` equal to the strategy's fields) is read as is.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from curation.mixing.config import MixtureConfig
from manifests.errors import RecipeError, UserError

#: metadata leaves the budget reads (never media bytes)
_BUDGET_COLUMNS = [
    "media.list.element.kind",
    "media.list.element.width",
    "media.list.element.height",
    "media.list.element.duration",
    "media.list.element.fps",
    "media.list.element.frames",
    "text",
    "turns.list.element.content",
]
_COLUMNS = ("tokens", "tokens_visual", "tokens_text")


class TokenCounter:
    """Counts `tokens`, `tokens_visual` and `tokens_text` per row of a scan batch."""

    def __init__(self, strategy: Any, tokenizer: Any, reuse: set[int]) -> None:
        self.strategy = strategy
        self.tokenizer = tokenizer
        self.reuse = reuse  # indices of inputs whose own token columns are used

    def parquet_columns(self, input_index: int, schema: pa.Schema) -> list[str]:
        if input_index in self.reuse and all(c in schema.names for c in _COLUMNS):
            return list(_COLUMNS)
        if input_index in self.reuse:  # `tokens` alone is recorded; its parts come from the budget
            return ["tokens", *_BUDGET_COLUMNS]
        return list(_BUDGET_COLUMNS)

    def count(self, batch: pa.RecordBatch, input_index: int) -> dict[str, np.ndarray]:
        names = batch.schema.names
        if input_index in self.reuse and all(c in names for c in _COLUMNS):
            return {c: _ints(batch.column(names.index(c))) for c in _COLUMNS}
        if input_index in self.reuse:  # only `tokens` recorded: the parts are computed
            own = _ints(batch.column(names.index("tokens")))
            parts = self._budget(batch)
            return {**parts, "tokens": own}
        return self._budget(batch)

    def _budget(self, batch: pa.RecordBatch) -> dict[str, np.ndarray]:
        from tokenization.budget import token_counts

        table = token_counts(batch, self.strategy, self.tokenizer)
        return {c: table.column(c).to_numpy() for c in _COLUMNS}


def _ints(col: pa.Array) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.fill_null(col.cast(pa.int64()), 0).to_numpy(zero_copy_only=False)


def _recipe_error(exc: UserError | TypeError, field: str) -> RecipeError:
    """A tokenization error re-addressed to the mixture field it came from (`strategy.tile`, not `strategy: tile`)."""
    sub = getattr(exc, "field", None)
    msg = str(exc).removeprefix(f"{sub}: ") if sub else str(exc)
    return RecipeError(msg, field=field if sub in (None, field, "preset", "name") else f"{field}.{sub}")


def resolve_strategy(spec: str | dict) -> Any:
    """`strategy: NAME` or `strategy: {name: NAME, field: value, ...}` -> tokenization.Strategy."""
    from tokenization.strategy import get_strategy

    if isinstance(spec, dict):
        fields = dict(spec)
        name = fields.pop("name", None) or fields.pop("preset", None)
        if not name:
            raise RecipeError("a strategy mapping needs `name:` (a tokenization preset)", field="strategy.name")
    else:
        name, fields = spec, {}
    try:
        return get_strategy(name, **fields)
    except (UserError, TypeError) as exc:
        raise _recipe_error(exc, "strategy") from None


def load_tokenizer(path: str | None) -> Any:
    """The mixture's `tokenizer:` (a tokenizer.json, or a folder holding one), or None for the strategy's estimate."""
    if path is None:
        return None
    from tokenization.base_tokenizer import load_tokenizer as load

    try:
        return load(path)
    except UserError as exc:
        raise _recipe_error(exc, "tokenizer") from None


def make_token_counter(cfg: MixtureConfig, inputs: list[Any]) -> TokenCounter | None:
    """A counter when the mixture reads tokens (error naming `strategy` when none is given)."""
    if not cfg.needs_tokens():
        return None
    if not cfg.strategy:
        raise RecipeError(
            "token shares, a token total or a token rule need a tokenization strategy (e.g. strategy: smolvlm-256m)",
            field="strategy",
        )
    strategy = resolve_strategy(cfg.strategy)
    tokenizer = load_tokenizer(cfg.tokenizer)
    reuse: set[int] = set()
    if tokenizer is None:  # recorded counts were made without a tokenizer too, only then are they comparable
        wanted = strategy.to_dict()
        for item in inputs:
            if "tokens" in item.manifest.schema.names and recorded_strategy(item.manifest.info) == wanted:
                reuse.add(item.index)
    return TokenCounter(strategy, tokenizer, reuse)


def recorded_strategy(info: dict) -> dict | None:
    """The strategy a manifest's token columns were made with, when it says so and used no tokenizer.

    Written by `tokenization.budget.add_tokens_column` (``extra.tokenization``) or
    by a curation recipe's ``tokens:`` section (``recipe.tokens``).
    """
    recorded = (info.get("extra") or {}).get("tokenization")
    if isinstance(recorded, dict):
        return recorded
    section = (info.get("recipe") or {}).get("tokens")
    if isinstance(section, dict) and section.get("strategy") and not section.get("tokenizer"):
        try:
            return resolve_strategy({"name": section["strategy"], **(section.get("overrides") or {})}).to_dict()
        except RecipeError:
            return None
    return None
