"""JSON Lines and JSON arrays, cut into element ranges and parsed into Arrow tables.

Planning finds element boundaries with numpy in fixed blocks, so memory does
not grow with the file: newlines for JSON Lines, and for a JSON array the
commas at depth one outside strings (quotes escaped by an odd run of
backslashes do not count). Reading a range parses all its elements in one
``pyarrow.json`` call (array separators turned into newlines); only when that
fails (a bad element, invalid UTF-8, mixed types) are the elements parsed one by
one to find which are bad, so a bad element costs a ledger row, not its
neighbours.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from manifests.storage import open_input

BLOCK = 8 << 20
_WS = np.zeros(256, bool)
_WS[[9, 10, 13, 32]] = True


@dataclass
class Parsed:
    """Objects of a range as a table (row k is element ``index[k]``), plus the elements that failed."""

    table: pa.Table
    index: np.ndarray  # element ordinal (within the range) of each table row
    failed: list[tuple[int, str, str, bytes]]  # (element ordinal, reason, detail, raw bytes)


def first_byte(path: str) -> bytes:
    """The first non-whitespace byte of a file (b'' when there is none)."""
    with open_input(path) as fh:
        while True:
            block = fh.read(1 << 16)
            if not block:
                return b""
            s = block.lstrip()
            if s:
                return s[:1]


def line_cuts(path: str, every: int, limit: int | None = None) -> tuple[np.ndarray, int, int]:
    """(start of lines 0, every, 2*every, ..., lines, end offset) from one newline scan (lines up to ``limit``).

    Only the cuts are kept, so planning memory does not grow with the number of lines.
    """
    kept = [np.zeros(1, np.int64)]
    count = 1  # line starts seen (line 0 starts at byte 0)
    offset = last = 0
    stop_at = None
    with open_input(path) as fh:
        while True:
            block = fh.read(BLOCK)
            if not block:
                break
            starts = np.flatnonzero(np.frombuffer(block, np.uint8) == 10).astype(np.int64) + offset + 1
            idx = count + np.arange(len(starts), dtype=np.int64)
            if limit is not None and count + len(starts) > limit:
                j = max(0, limit - count)
                stop_at = int(starts[j])
                starts, idx = starts[:j], idx[:j]
            kept.append(starts[idx % every == 0])
            if len(starts):
                last = int(starts[-1])
            count += len(starts)
            offset += len(block)
            if stop_at is not None:
                break
    end = stop_at if stop_at is not None else offset
    lines = count
    cuts = np.concatenate(kept)
    if stop_at is None and last == end:  # a trailing newline (or an empty file) starts no line
        lines -= 1
        if len(cuts) and cuts[-1] == end:
            cuts = cuts[:-1]
    if limit is not None:
        lines = min(lines, limit)
    return cuts, lines, end


class _ArrayScanner:
    """Streaming structural scan of JSON bytes: depth and string state carried across blocks."""

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth
        self.in_string = False
        self.backslashes = 0  # backslashes ending the previous block

    def block(self, data: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, chars, depth after each) of structural , [ ] { } outside strings in this block."""
        n = len(data)
        bs = data == 92
        idx = np.arange(n, dtype=np.int64)
        last_nb = np.maximum.accumulate(np.where(~bs, idx, -1))
        run_before = np.empty(n, np.int64)
        if n:
            run_before[0] = self.backslashes
            prev = last_nb[:-1]
            run_before[1:] = np.where(prev >= 0, idx[1:] - 1 - prev, idx[1:] + self.backslashes)
        quote = (data == 34) & (run_before % 2 == 0)
        parity = np.cumsum(quote) % 2
        inside_before = (parity - quote) % 2 == 1
        if self.in_string:
            inside_before = ~inside_before
        structural = np.isin(data, (44, 91, 93, 123, 125)) & ~inside_before & ~quote
        pos = np.flatnonzero(structural)
        chars = data[pos]
        step = np.where((chars == 91) | (chars == 123), 1, np.where((chars == 93) | (chars == 125), -1, 0))
        depth_after = self.depth + np.cumsum(step)
        if n:
            self.depth = int(depth_after[-1]) if len(depth_after) else self.depth
            total_quotes = int(quote.sum())
            self.in_string = self.in_string ^ bool(total_quotes % 2)
            self.backslashes = int(n - 1 - last_nb[-1]) if last_nb[-1] >= 0 else self.backslashes + n
        return pos + offset, chars, depth_after


def array_separators(path: str, every: int = 1) -> tuple[np.ndarray, int]:
    """(separators before elements 0, every, 2*every, ... and after the last one, elements) of a top-level JSON array.

    Separators are the ``[``, the depth-1 commas and the ``]``; element k lies
    strictly between separators k and k+1. Only every ``every``-th is kept (plus
    the last), so planning memory does not grow with the number of elements. A
    file cut before its closing bracket ends at the file's end.
    """
    scan = _ArrayScanner()
    kept: list[np.ndarray] = []
    count = 0  # separators seen
    opened = closed = False
    offset = 0
    last = -1

    def keep(found: np.ndarray) -> None:
        nonlocal count, last
        idx = count + np.arange(len(found), dtype=np.int64)
        kept.append(found[idx % every == 0])
        if len(found):
            last = int(found[-1])
        count += len(found)

    with open_input(path) as fh:
        while not closed:
            raw = fh.read(BLOCK)
            if not raw:
                break
            data = np.frombuffer(raw, np.uint8)
            pos, chars, depth = scan.block(data, offset)
            if not opened:
                first = np.flatnonzero((chars == 91) & (depth == 1))
                if len(first):
                    opened = True
                    keep(pos[first[:1]])
                    pos, chars, depth = pos[first[0] + 1:], chars[first[0] + 1:], depth[first[0] + 1:]
            if opened:
                commas = pos[(chars == 44) & (depth == 1)]
                end = np.flatnonzero(depth == 0)
                if len(end):
                    keep(commas[commas < pos[end[0]]])
                    keep(pos[end[:1]])
                    closed = True
                else:
                    keep(commas)
            offset += len(raw)
    if not opened:
        return np.zeros(0, np.int64), 0
    if not closed:
        keep(np.array([offset], np.int64))
    out = np.concatenate(kept).astype(np.int64)
    if out[-1] != last:
        out = np.concatenate([out, [last]])  # the closing separator is always kept
    elements = count - 1
    if elements == 1 and not _has_content(path, int(out[0]) + 1, int(out[-1])):
        elements = 0  # []
    return out, elements


def _has_content(path: str, a: int, b: int) -> bool:
    with open_input(path) as fh:
        fh.seek(a)
        return bool(fh.read(b - a).strip())


def read_bytes(path: str, start: int, end: int) -> bytes:
    with open_input(path) as fh:
        fh.seek(start)
        return fh.read(end - start)


def element_bounds_in(buf: bytes, array: bool) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the elements inside a range read from a file (lines, or array elements)."""
    data = np.frombuffer(buf, np.uint8)
    if array:
        pos, chars, depth = _ArrayScanner().block(data, 0)
        seps = pos[(chars == 44) & (depth == 0)]
    else:
        seps = np.flatnonzero(data == 10)
    starts = np.concatenate([[0], seps + 1]).astype(np.int64)
    ends = np.concatenate([seps, [len(data)]]).astype(np.int64)
    return starts, ends


def parse_range(buf: bytes, array: bool) -> Parsed:
    """Parse every element of a range; blank elements are skipped (their ordinals are absent)."""
    starts, ends = element_bounds_in(buf, array)
    data = np.frombuffer(buf, np.uint8)
    # blank elements (empty lines): their first/last non-whitespace byte does not exist
    nonblank = np.zeros(len(starts), bool)
    if len(data):
        ws = _WS[data]
        cum = np.concatenate([[0], np.cumsum(~ws)])
        nonblank = (cum[ends] - cum[starts]) > 0
    index = np.flatnonzero(nonblank)
    if array:
        body = data.copy()
        body[ends[:-1]] = 10  # separators become newlines: NDJSON with multi-line values
        text = body.tobytes()
    else:
        text = buf
    try:
        buf.decode("utf-8")  # pyarrow.json does not validate UTF-8; one C pass over the range does
        table = _read_json(text, array)
        if table.num_rows == len(index):
            return Parsed(table, index, [])
    except (UnicodeDecodeError, pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    return _parse_each(buf, starts, ends, index)


def _read_json(text: bytes, multiline: bool) -> pa.Table:
    opts = pj.ParseOptions(newlines_in_values=multiline, unexpected_field_behavior="infer")
    block = max(1 << 20, min(len(text) + 1, (1 << 31) - 1))
    return pj.read_json(io.BytesIO(text), read_options=pj.ReadOptions(block_size=block, use_threads=False),
                        parse_options=opts)


def _parse_each(buf: bytes, starts: np.ndarray, ends: np.ndarray, index: np.ndarray) -> Parsed:
    """The slow path: one element at a time, to tell the bad ones from the good."""
    good: list[dict] = []
    good_idx: list[int] = []
    failed: list[tuple[int, str, str, bytes]] = []
    for k in index.tolist():
        raw = buf[starts[k]:ends[k]]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            failed.append((k, "invalid_utf8", str(exc), raw))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            failed.append((k, "invalid_json", f"{exc.msg} at column {exc.colno}", raw))
            continue
        if not isinstance(obj, dict):
            failed.append((k, "invalid_json", f"a {type(obj).__name__}, not an object", raw))
            continue
        good.append(obj)
        good_idx.append(k)
    return Parsed(_objects_table(good), np.asarray(good_idx, np.int64), failed)


def _objects_table(objs: list[dict]) -> pa.Table:
    if not objs:
        return pa.table({})
    names: dict[str, None] = {}
    for o in objs:
        names.update(dict.fromkeys(o))
    objs = [{k: o.get(k) for k in names} for o in objs]  # from_pylist takes its columns from the first row
    try:
        return pa.Table.from_pylist(objs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    # column by column: a scalar next to lists becomes a one-element list; anything Arrow cannot type is JSON text
    cols = {}
    for k in names:
        values = [o[k] for o in objs]
        try:
            cols[k] = pa.array(values)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        types = {type(v).__name__ for v in values if v is not None}
        fixed = [None if v is None else _fix(v, types) for v in values]
        try:
            cols[k] = pa.array(fixed)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            cols[k] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, sort_keys=True) for v in values],
                               pa.string())
    return pa.table(cols)


def _fix(v: Any, types: set[str]) -> Any:
    if "list" in types and types <= {"list", "str"}:
        return v if isinstance(v, list) else [v]
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
