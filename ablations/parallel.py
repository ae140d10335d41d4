"""Several runs of a grid at once, one process each, for small models on CPU.

A model of a few hundred thousand parameters keeps two cores busy poorly: its
matrices are too small for torch's intra-op threads to split well. Measured on
2 cores, two one-thread runs side by side finished a 300-step colours run in
100 s each, against 72 s for one two-thread run alone: 1.44x the runs per hour.
So ``jobs: auto`` trains one run per core, each on ``cores // jobs`` threads.

Each worker is a fresh (spawned) process that rebuilds the task's rows from the
manifest the parent already generated, and reads the base tokenizer the parent
already trained, so workers never race to write shared files. A run's own
folder is written by its worker alone, with the same checkpoints as a run in
the parent: a killed grid resumes the same way. Workers exit when the parent
dies, so a restarted grid never shares a run folder with an orphan.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ablations.backbones import Backbones
from ablations.data import TaskSource
from ablations.grid import RunPoint
from ablations.train import DeviceSpec, available_cores

#: how often a worker checks that the grid process that started it is still alive
PARENT_POLL_S = 1.0
#: how often the grid process passes the workers' progress lines on
PROGRESS_POLL_S = 0.5


@dataclass(frozen=True)
class SourceRef:
    """What a worker needs to rebuild a task's rows: the same arguments the parent used."""

    manifest: Path
    train: int
    val: int
    max_side: int | None

    @classmethod
    def of(cls, source: TaskSource, train: int, val: int) -> "SourceRef":
        return cls(Path(source.path), train, val, source.max_side)


def resolve_jobs(jobs: int | str, device: str, runs: int) -> int:
    """``auto`` is one run per core on CPU and one run at a time on a GPU; never more jobs than runs."""
    if jobs == "auto":
        n = available_cores() if device == "cpu" else 1
    else:
        n = int(jobs)
    return max(1, min(n, runs))


def threads_per_job(jobs: int, threads: int | None) -> int:
    """An explicit ``--threads`` wins; otherwise the cores are shared out so that jobs x threads = cores."""
    return threads or max(1, available_cores() // jobs)


def train_in_pool(
    todo: Sequence[RunPoint],
    refs: dict[str, SourceRef],
    keys: dict[str, str],
    out: Path,
    backbones: Backbones,
    devs: dict[str, DeviceSpec],
    jobs: int,
    progress: Callable[[str], None] | None,
) -> Iterator[tuple[RunPoint, dict[str, Any]]]:
    """Train ``todo`` over ``jobs`` processes and yield ``(point, result)`` as each run finishes.

    ``keys`` maps a run id to its task key, ``devs`` to its device. A run that fails
    stops the grid: the runs still queued are cancelled, the running ones are ended
    with the pool, and the error is raised here, as it would be in the parent.
    """
    ctx = multiprocessing.get_context("spawn")  # torch's OpenMP state does not survive a fork
    lines = ctx.Queue() if progress else None  # the workers' progress lines, passed to ``progress`` here
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_start, initargs=(os.getpid(), lines))
    futures: dict[Future, RunPoint] = {}
    try:
        for p in todo:
            key = keys[p.run_id]
            fut = pool.submit(_train, p, refs[key], out / "tokenizers" / key, out / "runs" / p.run_id, backbones,
                              devs[p.run_id])
            futures[fut] = p
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=PROGRESS_POLL_S, return_when=FIRST_COMPLETED)
            _drain(lines, progress)
            for fut in done:
                yield futures[fut], fut.result()
        _drain(lines, progress)
    finally:
        for fut in futures:
            fut.cancel()
        _end(pool)


def _drain(lines: Any, progress: Callable[[str], None] | None) -> None:
    if lines is None or progress is None:
        return
    while True:
        try:
            progress(lines.get_nowait())
        except queue.Empty:
            return


def _end(pool: ProcessPoolExecutor) -> None:
    """End the pool without finishing the runs in flight: on an error or Ctrl-C they are abandoned, resumable.

    The workers are killed first; the pool then sees them broken, and its shutdown waits for its own
    threads. Every worker it ever listed is then reaped, so no process is left writing into the output.
    """
    seen = {}

    def kill() -> None:
        seen.update(getattr(pool, "_processes", None) or {})
        for proc in seen.values():
            if proc.is_alive():
                proc.terminate()

    kill()
    pool.shutdown(wait=True, cancel_futures=True)
    kill()
    for proc in seen.values():
        proc.join(timeout=10)


_SOURCES: dict[SourceRef, TaskSource] = {}
_LINES: Any = None


def _worker_start(parent: int, lines: Any) -> None:
    """In each worker: passive OpenMP waiting (see commands.py), and exit as soon as the grid process is gone."""
    global _LINES
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _LINES = lines

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(PARENT_POLL_S)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _train(point: RunPoint, ref: SourceRef, tokenizer_dir: Path, run_dir: Path, backbones: Backbones,
           dev: DeviceSpec) -> dict[str, Any]:
    """One run inside a worker: the same factories and ``train_one`` as a run in the parent."""
    from ablations.runner import factories
    from ablations.train import train_one

    source = _SOURCES.get(ref)
    if source is None:
        source = _SOURCES[ref] = TaskSource.from_manifest(ref.manifest, ref.train, ref.val, max_side=ref.max_side)
    data_factory, model_factory = factories(source, tokenizer_dir, backbones)
    return train_one(point, data_factory, model_factory, run_dir, dev, _LINES.put if _LINES is not None else None)
