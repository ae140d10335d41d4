"""One small, quiet Ray for curation jobs and tests: reuse, connect, or start embedded."""
from __future__ import annotations

import logging
import os
import warnings

#: object store of an embedded Ray: enough for chunk summaries and dedup shuffles, small on a laptop
EMBEDDED_OBJECT_STORE = 384 * 1024 * 1024

_QUIET_LOGGERS = ("ray", "ray.data", "ray._private", "ray.util", "ray.train", "ray.tune")


def _quiet_ray_data(quiet: bool) -> None:
    """Turn off Ray Data's own progress bars and execution banners: curation draws its own."""
    from ray.data import DataContext  # importing ray.data configures its loggers: quieten them afterwards

    if quiet:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    ctx = DataContext.get_current()
    for name, value in (
        ("enable_progress_bars", False),
        ("enable_operator_progress_bars", False),
        ("print_on_execution_start", False),
        ("enable_auto_log_stats", False),
        ("verbose_stats_logs", False),
    ):
        if hasattr(ctx, name):
            setattr(ctx, name, value)


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Make sure a Ray is available to this process.

    - An already-initialized Ray (a test session, a notebook) is reused as is.
    - ``address`` or ``RAY_ADDRESS`` connects to an existing cluster.
    - Otherwise an embedded local Ray starts with a bounded object store, no
      dashboard, and (when ``quiet``) worker logs kept out of the terminal.
    """
    import ray

    if quiet:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"ray(\..*)?")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if ray.is_initialized():
        _quiet_ray_data(quiet)
        return
    target = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(
        include_dashboard=False,
        ignore_reinit_error=True,
        logging_level=logging.ERROR if quiet else logging.INFO,
        log_to_driver=not quiet,
        configure_logging=True,
    )
    if target:
        ray.init(address=target, **common)
    else:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(
            num_cpus=num_cpus if num_cpus is not None else (os.cpu_count() or 1),
            object_store_memory=EMBEDDED_OBJECT_STORE,
            _system_config={"automatic_object_spilling_enabled": True},
            **common,
        )
    _quiet_ray_data(quiet)


def cluster_cpus() -> int:
    """CPUs the connected Ray offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
