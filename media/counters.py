"""Counting instrumentation: how many times media files are read and decoded, per kind.

"Decode once" is a property that silently erodes: an operator that opens a
file again still produces the right answer, only slower. These counters make
it testable (tests/test_decode_once.py) and measurable (benchmarks report reads
and decodes per input). They are process-wide, thread-safe and cheap (a lock
and a dict increment per event, next to a decode that costs milliseconds).

Events: ``read`` (a whole file read from disk: the shared decode's read, a
streamed digest, Pillow or pdfium opening a path), ``decode`` (one decode of
an image, one PDF page render, one batch of video frames), ``probe`` (a video
container header plus its first frame), ``scan`` (the clip cutter's pass over
every frame of a video, media.scenes.scan_video). The shared decode reads a video file
once and its decoders decode those bytes; a video over the in-memory cap
(media.decoded.VIDEO_IN_MEMORY_MAX) is streamed for its hash and read again by
its decoders, which counts as a second ``read``. A clip source's scan reads
the file, and its clips decode those bytes (curation.clips.expand).
"""
from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.Lock()
_COUNTS: Counter[tuple[str, str]] = Counter()


def count(event: str, kind: str, n: int = 1) -> None:
    """Record ``n`` events (``read``, ``decode``, ``probe``, ``scan``) of a media ``kind`` (image, pdf, video)."""
    with _LOCK:
        _COUNTS[(event, kind)] += n


def snapshot() -> dict[str, int]:
    """Counts so far as ``{"read.image": 3, "decode.image": 3, ...}``."""
    with _LOCK:
        return {f"{e}.{k}": v for (e, k), v in sorted(_COUNTS.items())}


def reset() -> None:
    with _LOCK:
        _COUNTS.clear()


@contextmanager
def counting() -> Iterator[dict[str, int]]:
    """Counts of the events inside the block (in this process), filled in when the block ends."""
    before = snapshot()
    out: dict[str, int] = {}
    try:
        yield out
    finally:
        after = snapshot()
        out.update({k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})
