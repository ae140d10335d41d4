"""Positional marker styles and their registration on a ``tokenizers.Tokenizer``.

``learned``: ``<row_i_col_j>`` for every grid the strategy can produce, plus
``<global-img>``, ``<fake_token_around_image>`` and ``<image>``, are added special
tokens (one id each, so a model can train their embedding rows; finding 5).
``string``: only ``<fake_token_around_image>`` and ``<image>`` are special (the
image token must stay one id to be replaced by embeddings); the markers are plain
text that the base BPE splits into several pieces (SmolVLM-Instruct 2.2B).
``none``: no row/col or global markers in the prompt at all.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tokenizers import AddedToken, Tokenizer

if TYPE_CHECKING:  # pragma: no cover
    from tokenization.strategy import Strategy

STYLES = ("learned", "string", "none")


def grid_markers(max_side: int) -> list[str]:
    """``<row_r_col_c>`` for 1 <= r, c <= max_side, row-major."""
    return [f"<row_{r}_col_{c}>" for r in range(1, max_side + 1) for c in range(1, max_side + 1)]


def special_tokens(strategy: "Strategy") -> list[str]:
    """The tokens that must be single ids under the strategy's positional style."""
    base = [strategy.fake_image_token, strategy.image_token]
    if strategy.positional == "learned":
        return base + [strategy.global_image_token] + grid_markers(strategy.max_grid_side)
    return base


def with_strategy_tokens(tokenizer: Tokenizer, strategy: "Strategy") -> Tokenizer:
    """A copy of `tokenizer` with the strategy's special tokens added (the input is left untouched)."""
    out = Tokenizer.from_str(tokenizer.to_str())
    out.add_special_tokens(
        [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in special_tokens(strategy)]
    )
    return out
