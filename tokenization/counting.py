"""Sequence lengths of prompt blocks, exact with a tokenizer or estimated without one.

Exact: text is encoded by the base tokenizer with the strategy's special tokens
registered, so it is the length a training run will see. Estimate (no
tokenizer): special tokens count one each and the text between them counts its
pre-tokens (letter runs, single digits, punctuation runs, whitespace runs), the
minimum any byte-level BPE with a GPT-2/Llama-3 style pre-tokenizer produces;
``<row_1_col_2>`` estimates to 9 pieces, in line with the 7-9 the paper reports.
Free text columns (captions, turns) are estimated from their UTF-8 byte length
instead, see :mod:`tokenization.budget`.

Image blocks are counted piecewise: added special tokens cut the text into
segments that a tokenizer encodes independently, so a block's length is a sum
of per-tile, per-newline and per-marker counts. That keeps a whole-grid table
cheap even for strategies with dozens of rows and columns.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable

import numpy as np
from tokenizers import Tokenizer

from tokenization import prompts
from tokenization.positional import special_tokens, with_strategy_tokens

if TYPE_CHECKING:  # pragma: no cover
    from tokenization.strategy import Strategy

_PRETOKEN = re.compile(r"[^\W\d_]+|\d|\s+|[^\w\s]+|_+")


def pretoken_count(text: str) -> int:
    """Number of pre-tokens: a lower bound on byte-level BPE pieces."""
    return len(_PRETOKEN.findall(text))


class Counter:
    """Counts tokens of prompt text under one strategy, with or without a base tokenizer."""

    def __init__(self, strategy: "Strategy", tokenizer: Tokenizer | None = None) -> None:
        self.strategy = strategy
        self.exact = tokenizer is not None
        self._tok = with_strategy_tokens(tokenizer, strategy) if tokenizer is not None else None
        self._specials = frozenset(special_tokens(strategy))
        # specials other than the row/col markers (learned markers are matched by one pattern)
        fixed = sorted((t for t in self._specials if not t.startswith("<row_")), key=len, reverse=True)
        alts = [re.escape(t) for t in fixed]
        if strategy.positional == "learned":
            alts.insert(0, r"<row_\d+_col_\d+>")
        self._split = re.compile("(" + "|".join(alts) + ")")
        s = strategy
        self.markers = s.positional != "none"
        self.nl = self.count("\n")
        self.nl2 = self.count("\n\n")
        self.global_marker = self.count(s.global_image_token) if self.markers else 0
        self.intro = self.count(s.image_intro_text) if s.media_intro else 0
        self.outro = self.count(s.image_outro_text) if s.media_outro else 0

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The base tokenizer with this strategy's special tokens added (None when estimating)."""
        return self._tok

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tok is not None:
            return len(self._tok.encode(text, add_special_tokens=False).ids)
        total = 0
        for piece in self._split.split(text):
            if piece in self._specials:
                total += 1
            elif piece:
                total += pretoken_count(piece)
        return total

    def count_many(self, texts: Iterable[str]) -> np.ndarray:
        texts = list(texts)
        if self._tok is not None and texts:
            enc = self._tok.encode_batch_fast(texts, add_special_tokens=False)
            return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(texts))
        return np.fromiter((self.count(t) for t in texts), dtype=np.int64, count=len(texts))

    # ---- image blocks ----------------------------------------------------------------------
    def marker_table(self, n: int) -> np.ndarray:
        """[n+1, n+1] tokens of ``<row_r_col_c>`` (0 in style ``none`` and on the zero row/col)."""
        table = np.zeros((n + 1, n + 1), dtype=np.int64)
        if self.markers and n:
            texts = [f"<row_{r}_col_{c}>" for r in range(1, n + 1) for c in range(1, n + 1)]
            table[1:, 1:] = self.count_many(texts).reshape(n, n)
        return table

    def _single(self) -> int:
        """fake + global marker + S image tokens + fake."""
        return 2 + self.global_marker + self.strategy.image_seq_len

    def block_tokens(self, rows: int, cols: int) -> int:
        """Length of :meth:`Strategy.image_prompt` for one grid, counted piecewise."""
        s = self.strategy
        total = self.intro + self.outro + self._single()
        if rows == 0 and cols == 0:
            return total
        markers = int(self.marker_table(max(rows, cols))[1 : rows + 1, 1 : cols + 1].sum())
        total += rows * cols * (1 + s.image_seq_len) + markers
        return total + (rows - 1) * self.nl + self.nl2  # "\n" after each row; the last joins the "\n" before the global

    def image_table(self, n: int | None = None) -> np.ndarray:
        """[n+1, n+1] int64 block length for (rows, cols); [0, 0] is an un-split image, other zero-row/col cells 0."""
        s = self.strategy
        n = s.max_grid_side if n is None else n
        r = np.arange(n + 1)[:, None]
        c = np.arange(n + 1)[None, :]
        markers = np.cumsum(np.cumsum(self.marker_table(n), axis=0), axis=1)  # sum over the r x c sub-grid
        table = self.intro + self.outro + self._single() + r * c * (1 + s.image_seq_len) + markers + (r - 1) * self.nl + self.nl2
        table = np.where((r > 0) & (c > 0), table, 0)
        table[0, 0] = self.intro + self.outro + self._single()
        return table.astype(np.int64)

    # ---- video -------------------------------------------------------------------------------
    def _frame_text(self) -> str:
        s = self.strategy
        return s.frame_template.format(timestamp="00:00") + prompts.single_image_block(
            s.image_seq_len, s.image_token, s.fake_image_token, s.global_image_token if self.markers else None
        )

    def frame_tokens(self) -> int:
        """One video frame: its timestamp line plus a one-tile block."""
        return self.count(self._frame_text())

    def video_wrapper_tokens(self, frames: np.ndarray, durations: np.ndarray) -> np.ndarray:
        """Intro + outro tokens per video (the intro spells the frame count and the duration).

        The intro is counted together with the first frame's timestamp line, since the
        text runs join there (``video.\\n`` + ``\\nFrame from``) and may share a token.
        """
        s = self.strategy
        frames = np.asarray(frames, dtype=np.int64)
        secs = np.trunc(np.nan_to_num(np.asarray(durations, dtype=np.float64), nan=0.0)).astype(np.int64)
        outro = self.count(s.video_outro_text) if s.media_outro else 0
        if not s.media_intro or frames.size == 0:
            return np.full(frames.shape, outro, dtype=np.int64)
        # Durations are counted through a representative with the same digit layout
        # ("0:00:00" or "10:00:00"): with digit-by-digit pre-tokenization (SmolLM2, the
        # trained BPE, the estimate) that count is exact, and it keeps the number of
        # distinct intros to about two per frame count instead of one per second.
        rep = np.where(secs < 36000, 0, np.where(secs < 86400, 36000, secs))
        width = int(max(self.strategy.video_max_frames, int(frames.max(initial=0)))) + 1
        keys, inverse = np.unique(rep * width + frames, return_inverse=True)
        frame = self._frame_text()
        intros = [
            s.video_intro_text.format(
                frame_count=prompts.number_to_words(int(k % width)), video_duration=prompts.format_duration(int(k // width))
            )
            + frame
            for k in keys
        ]
        return self.count_many(intros)[inverse.reshape(-1)] - self.count(frame) + outro


@lru_cache(maxsize=64)
def estimate_counter(strategy: "Strategy") -> Counter:
    """The tokenizer-free counter of a strategy, built once (strategies are immutable and hashable)."""
    return Counter(strategy)
