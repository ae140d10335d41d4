"""Job engine: plan chunks, run operators on Ray Data or in-process, stage results, finalize a manifest."""
from __future__ import annotations

from curation.engine.job import JobResult, run_job

__all__ = ["JobResult", "run_job"]
