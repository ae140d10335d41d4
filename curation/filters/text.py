"""Text quality scores and thresholds, vectorized over a whole batch (Arrow compute + numpy + polars).

Scores (all per row):

- ``score_chars``, ``score_words``: length in characters and whitespace-separated words.
- ``score_non_alnum``: characters that are neither letters, digits nor whitespace, over non-space characters.
- ``score_dup_lines``: fraction of non-empty lines that repeat an earlier line of the same text.
- ``score_dup_line_chars``: characters in those repeated lines over all characters of non-empty lines.
- ``score_top_{n}gram``: character share of the most frequent word n-gram (count x its characters / all word characters).
- ``score_dup_{n}gram``: share of word characters covered by any word n-gram occurring more than once.

The repetition scores follow the Gopher rules (Rae et al., 2021). Words are
lower-cased; an n-gram's characters are the sum of its words' characters.
Overlapping duplicate n-grams are counted by coverage (each word once), a
close, order-independent variant of Gopher's greedy scan.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.filters.common import STAGE_FILTER, check, set_column, undecided
from curation.operators import Operator, mark_dropped
from curation.recipe import CaptionFilters, TextFilters

_MUL = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for rolling n-gram hashes (wraps mod 2^64)


def text_of(table: pa.Table) -> pa.ChunkedArray:
    """The text a row is judged by: ``text``, else its turns' contents joined by newlines."""
    text = table.column("text")
    if "turns" not in table.column_names:
        return text
    turns = table.column("turns").combine_chunks()
    if pc.all(pc.is_null(turns)).as_py():
        return text
    contents = pc.list_flatten(turns).field("content")
    parents = pc.list_parent_indices(turns).to_numpy()
    joined = (
        pl.DataFrame({"row": parents, "c": pl.Series(contents.to_pylist(), dtype=pl.Utf8)})
        .group_by("row", maintain_order=True)
        .agg(pl.col("c").str.join("\n"))
    )
    # scatter the joined contents back to their rows (rows without turns stay null)
    where = np.full(table.num_rows, -1, np.int64)
    where[joined["row"].to_numpy()] = np.arange(joined.height)
    from_turns = joined["c"].to_arrow().cast(pa.string()).take(pa.array(where, mask=where < 0))
    return pc.coalesce(text, from_turns) if len(text) else from_turns


def text_scores(texts: pa.Array | pa.ChunkedArray, top_ns: list[int], dup_ns: list[int]) -> dict[str, np.ndarray]:
    """All text scores of a batch; rows with null text get NaN (and 0 for lengths)."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    n = len(texts)
    texts = pc.fill_null(texts, "")
    chars = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    spaces = pc.count_substring_regex(texts, r"\s").to_numpy(zero_copy_only=False).astype(np.int64)
    symbols = pc.count_substring_regex(texts, r"[^\p{L}\p{N}\s]").to_numpy(zero_copy_only=False).astype(np.int64)
    out: dict[str, np.ndarray] = {
        "score_chars": chars,
        "score_non_alnum": np.where(chars - spaces > 0, symbols / np.maximum(1, chars - spaces), np.nan),
    }

    # lines: repeated non-empty lines within a text
    lines = pc.split_pattern(texts, "\n")
    line_vals = pc.utf8_trim_whitespace(pc.list_flatten(lines))
    line_doc = pc.list_parent_indices(lines).to_numpy()
    line_len = pc.utf8_length(line_vals).to_numpy(zero_copy_only=False).astype(np.int64)
    nonempty = line_len > 0
    ldoc = line_doc[nonempty].astype(np.int64)
    llen = line_len[nonempty]
    lh = pl.Series(line_vals.filter(pa.array(nonempty))).hash(7).to_numpy() if nonempty.any() else np.zeros(0, np.uint64)
    _, group_first, _, _ = _groups(_doc_key(ldoc, lh))
    is_rep = np.ones(len(ldoc), dtype=bool)
    is_rep[group_first] = False  # one occurrence of each line is not a repeat
    nlines = np.bincount(ldoc, minlength=n)
    rep_lines = np.bincount(ldoc, weights=is_rep, minlength=n)
    rep_chars = np.bincount(ldoc, weights=is_rep * llen, minlength=n)
    line_chars = np.bincount(ldoc, weights=llen, minlength=n)
    out["score_dup_lines"] = np.where(nlines > 0, rep_lines / np.maximum(1, nlines), np.nan)
    out["score_dup_line_chars"] = np.where(line_chars > 0, rep_chars / np.maximum(1, line_chars), np.nan)

    # words and n-grams
    words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(pc.utf8_lower(texts)))
    flat = pc.list_flatten(words)
    parent = pc.list_parent_indices(words).to_numpy().astype(np.int64)
    real = pc.greater(pc.utf8_length(flat), 0)  # an empty text splits into one empty "word"
    flat = flat.filter(real)
    doc = parent[real.to_numpy(zero_copy_only=False)]
    out["score_words"] = np.bincount(doc, minlength=n).astype(np.int64)
    wlen = pc.utf8_length(flat).to_numpy(zero_copy_only=False).astype(np.float64)
    total = np.bincount(doc, weights=wlen, minlength=n) if len(doc) else np.zeros(n)
    wh = pl.Series(flat).hash(11).to_numpy().astype(np.uint64) if len(flat) else np.zeros(0, np.uint64)
    csum = np.concatenate([[0.0], np.cumsum(wlen)])
    for size in sorted(set(top_ns) | set(dup_ns)):
        top, dup = _ngram_scores(doc, wh, wlen, csum, total, n, size)
        if size in top_ns:
            out[f"score_top_{size}gram"] = top
        if size in dup_ns:
            out[f"score_dup_{size}gram"] = dup
    return out


def _ngram_scores(doc: np.ndarray, wh: np.ndarray, wlen: np.ndarray, csum: np.ndarray, total: np.ndarray,
                  n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    m = len(doc) - size + 1
    top = np.full(n, np.nan)
    dup = np.full(n, np.nan)
    has_words = total > 0
    top[has_words] = 0.0
    dup[has_words] = 0.0
    if m <= 0:
        return top, dup
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for k in range(size):  # size is small (<= 32): a loop over offsets, vectorized over all n-grams
            h = h * _MUL + wh[k : k + m]
    valid = doc[:m] == doc[size - 1 : size - 1 + m]
    if not valid.any():
        return top, dup
    pos = np.flatnonzero(valid)
    gdoc = doc[pos]
    gchars = csum[pos + size] - csum[pos]
    cnt_pos, first, counts, _ = _groups(_doc_key(gdoc, h[pos]))
    # most frequent n-gram per text (ties: the longest), as a character share (Gopher's top n-gram)
    udoc, uchars = gdoc[first], gchars[first]
    maxcnt = np.zeros(n, np.int64)
    np.maximum.at(maxcnt, udoc, counts)
    eligible = counts == maxcnt[udoc]
    best = np.zeros(n)
    np.maximum.at(best, udoc[eligible], uchars[eligible])
    docs_with = np.unique(gdoc)
    top[docs_with] = maxcnt[docs_with] * best[docs_with] / np.maximum(1.0, total[docs_with])
    # share of word characters covered by any repeated n-gram
    rep = pos[cnt_pos > 1]
    if len(rep):
        length = len(doc) + 1
        delta = np.bincount(rep, minlength=length) - np.bincount(rep + size, minlength=length)
        covered = np.cumsum(delta[:-1]) > 0
        cov_chars = np.bincount(doc, weights=wlen * covered, minlength=n)
        dup[has_words] = cov_chars[has_words] / total[has_words]
    return top, dup


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Group equal keys with one sort: (group size at each position, one position per group, group sizes, order)."""
    m = len(key)
    if m == 0:
        e = np.zeros(0, np.int64)
        return e, e, e, e
    order = np.argsort(key)
    sk = key[order]
    start = np.empty(m, dtype=bool)
    start[0] = True
    np.not_equal(sk[1:], sk[:-1], out=start[1:])
    gid = np.cumsum(start) - 1
    sizes = np.bincount(gid)
    at_pos = np.empty(m, np.int64)
    at_pos[order] = sizes[gid]
    return at_pos, order[start], sizes, order


def _doc_key(doc: np.ndarray, h: np.ndarray) -> np.ndarray:
    """One 64-bit key per (text, hash) pair, so grouping is a single np.unique (collisions ~2^-64)."""
    with np.errstate(over="ignore"):
        return h.astype(np.uint64) ^ (doc.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93))


def text_columns(cfg: TextFilters) -> dict[str, pa.DataType]:
    cols: dict[str, pa.DataType] = {
        "score_chars": pa.int64(), "score_words": pa.int64(), "score_non_alnum": pa.float64(),
        "score_dup_lines": pa.float64(), "score_dup_line_chars": pa.float64(),
    }
    for size in cfg.max_top_ngram_frac:
        cols[f"score_top_{size}gram"] = pa.float64()
    for size in cfg.max_dup_ngram_frac:
        cols[f"score_dup_{size}gram"] = pa.float64()
    return cols


class TextQuality(Operator):
    """Score texts (or captions/turns of image_text rows) and drop those failing a threshold."""

    stage = STAGE_FILTER

    def __init__(self, cfg: TextFilters) -> None:
        self.cfg = cfg
        self.columns = text_columns(cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        c = self.cfg
        st = self.stage
        texts = text_of(table)
        scores = text_scores(texts, list(c.max_top_ngram_frac), list(c.max_dup_ngram_frac))
        null = pc.is_null(texts).to_numpy(zero_copy_only=False)
        for name, typ in self.columns.items():
            arr = scores[name]
            mask = null | (np.isnan(arr) if arr.dtype.kind == "f" else np.zeros(len(arr), bool))
            table = set_column(table, name, pa.array(arr, mask=mask).cast(typ))
        if isinstance(c, CaptionFilters):
            nimg = pc.list_value_length(table.column("media")).to_numpy(zero_copy_only=False)
            nimg = np.nan_to_num(nimg.astype(np.float64), nan=0.0)
            table = _count_check(table, nimg, c.min_images, c.max_images, st)
        missing = null & undecided(table)
        if missing.any():
            table = mark_dropped(table, pa.array(missing), st, "missing_text", "row has no text")
        table = check(table, "score_chars", ">=", c.min_chars, st, "min_chars")
        table = check(table, "score_chars", "<=", c.max_chars, st, "max_chars")
        table = check(table, "score_words", ">=", c.min_words, st, "min_words")
        table = check(table, "score_words", "<=", c.max_words, st, "max_words")
        table = check(table, "score_non_alnum", "<=", c.max_non_alnum_ratio, st, "max_non_alnum_ratio")
        long_enough = pc.greater_equal(table.column("score_words"), c.repetition_min_words)
        table = _gated(table, long_enough, "score_dup_lines", c.max_dup_line_frac, "max_dup_line_frac", st)
        table = _gated(table, long_enough, "score_dup_line_chars", c.max_dup_line_char_frac, "max_dup_line_char_frac", st)
        for size, thr in c.max_top_ngram_frac.items():
            table = _gated(table, long_enough, f"score_top_{size}gram", thr, f"max_top_ngram_frac.{size}", st)
        for size, thr in c.max_dup_ngram_frac.items():
            table = _gated(table, long_enough, f"score_dup_{size}gram", thr, f"max_dup_ngram_frac.{size}", st)
        return table


def _gated(table: pa.Table, gate: pa.ChunkedArray, column: str, threshold, reason: str, stage: str) -> pa.Table:
    """A repetition check applied only to rows with enough words (others see a null score for the check)."""
    if threshold is None:
        return table
    original = table.column(column)
    masked = pc.if_else(pc.fill_null(gate, False), original, pa.scalar(None, original.type))
    idx = table.column_names.index(column)
    checked = check(table.set_column(idx, column, masked), column, "<=", threshold, stage, reason)
    return checked.set_column(idx, column, original)


def _count_check(table: pa.Table, counts: np.ndarray, lo: int | None, hi: int | None, stage: str) -> pa.Table:
    text = pc.cast(pa.array(counts.astype(np.int64)), pa.string())
    for bound, sign, reason in ((lo, "<", "min_images"), (hi, ">", "max_images")):
        if bound is None:
            continue
        mask = counts < bound if sign == "<" else counts > bound
        if mask.any():
            detail = pc.binary_join_element_wise(text, f" images {sign} {bound}", "")
            table = mark_dropped(table, pa.array(mask), stage, reason, detail)
    return table
