"""Answer scoring and resource probes for one run.

Character accuracy is ``1 - edit_distance / len(reference)`` clipped at 0 (one
minus the character error rate), so a partly read snippet earns partial credit
where exact match gives none.
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
import psutil


def normalize_answer(text: str) -> str:
    """Whitespace-collapsed, stripped text: decoding artefacts in spacing are not reading errors."""
    return " ".join(text.split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy pass per character of ``a``.

    The in-row dependency (insertions) is resolved with a running minimum:
    ``d[j] = min_k<=j (t[k] + j - k)`` is ``minimum.accumulate(t - j) + j``.
    """
    if not a:
        return len(b)
    if not b:
        return len(a)
    bv = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    cols = np.arange(len(b) + 1)
    prev = cols.copy()
    for i, ch in enumerate(a, start=1):
        cost = (bv != ord(ch)).astype(np.int64)
        t = np.empty_like(prev)
        t[0] = i
        t[1:] = np.minimum(prev[1:] + 1, prev[:-1] + cost)
        prev = np.minimum.accumulate(t - cols) + cols
    return int(prev[-1])


def score_answers(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Exact match and character accuracy, averaged over samples."""
    if len(predictions) != len(references):
        raise ValueError("predictions and references differ in length")
    if not references:
        return {"exact_match": float("nan"), "char_accuracy": float("nan")}
    exact, chars = [], []
    for p, r in zip(predictions, references):
        p, r = normalize_answer(p), normalize_answer(r)
        exact.append(p == r)
        chars.append(max(0.0, 1.0 - edit_distance(p, r) / max(1, len(r))))
    return {"exact_match": float(np.mean(exact)), "char_accuracy": float(np.mean(chars))}


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled by a background thread.

    ``ru_maxrss`` cannot be reset between runs of one process, so a sampler
    measures each run on its own.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self._proc = psutil.Process(os.getpid())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> int:
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss

    def __enter__(self) -> "PeakRSS":
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="peak-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

