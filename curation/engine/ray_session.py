"""One small, quiet Ray for curation jobs and tests: reuse, connect, or start embedded."""
from __future__ import annotations

import logging
import os
import warnings
from typing import Iterator

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


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> bool:
    """Make sure a Ray is available to this process; True when it started an embedded one (whose workers run
    this very interpreter, so they import what it imports).

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
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    common = dict(
        include_dashboard=False,
        ignore_reinit_error=True,
        logging_level=logging.ERROR if quiet else logging.INFO,
        log_to_driver=not quiet,
        configure_logging=True,
    )
    started = not target
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
    return started


def cluster_cpus() -> int:
    """CPUs the connected Ray offers (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# --------------------------------------------------------------------------- workers


#: environment variables a driver hands to the workers it starts (the test-only fault hooks of media/decoded.py);
#: a Ray already running (a test session, a cluster) never sees variables set after its workers started
FORWARDED_ENV_PREFIX = "SMOLCURATE_TEST_"

#: modules every curation worker imports: one from each package of the smolcurate distribution a worker needs
WORKER_MODULES = ("curation.engine.stages", "media.decoded", "manifests.storage")

#: how to ship smolcurate to workers that lack it (docs/storage.md, "Cluster runs")
SHIP_HINT = ("ship it with the job's runtime_env: ray job submit --runtime-env-json "
             "'{\"working_dir\": \".\"}' from a checkout, or {\"py_modules\": [...]} or {\"pip\": [\"smolcurate\"]}, "
             "or install it on every node (docs/storage.md, Cluster runs)")


def worker_runtime_env() -> dict | None:
    """A runtime_env carrying the driver's ``SMOLCURATE_TEST_*`` variables to the job's workers (None without any).

    Ray merges a task's ``env_vars`` into the job's runtime_env, so a ``working_dir``/``py_modules``/``pip`` the
    job was submitted with still applies.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    return {"env_vars": env} if env else None


def _import_probe():
    """The probe task's function, built in a closure so it is shipped by value: a worker without smolcurate
    can still run it and say which import fails (a function from this module would fail to unpickle)."""

    def probe(modules: tuple[str, ...]) -> str:
        import importlib

        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                return f"{type(exc).__name__}: {exc}"
        return ""

    return probe


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every error behind it (``__cause__``, ``__context__``, a RayTaskError's ``cause``), once each."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]


def missing_module(exc: BaseException) -> str | None:
    """The ``No module named ...`` behind a Ray error (a worker that could not import smolcurate), else None."""
    for e in error_chain(exc):
        if isinstance(e, ImportError):
            return f"{type(e).__name__}: {e}"
        text = str(e)
        if "ModuleNotFoundError" in text or "No module named" in text:
            line = next((ln.strip() for ln in text.splitlines() if "No module named" in ln), text.splitlines()[0])
            return line[line.find("ModuleNotFoundError"):] if "ModuleNotFoundError" in line else line
    return None


def check_workers(modules: tuple[str, ...] | None = None, timeout_s: float = 300.0) -> None:
    """Fail fast, with one line saying how to ship smolcurate, when the workers of some node cannot import it.

    One zero-CPU task per alive node that offers CPUs or GPUs, pinned to it, imports ``modules`` (default
    :data:`WORKER_MODULES`). A node that does not answer within ``timeout_s`` (a slow ``pip`` runtime_env) is
    not held against the job.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from manifests.errors import UserError

    nodes = [n for n in ray.nodes() if n.get("Alive") and
             (n.get("Resources", {}).get("CPU", 0) > 0 or n.get("Resources", {}).get("GPU", 0) > 0)]
    if not nodes:
        return
    task = ray.remote(num_cpus=0, max_retries=1)(_import_probe())
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
                         runtime_env=worker_runtime_env()).remote(tuple(modules or WORKER_MODULES)) for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for node, ref in zip(nodes, refs):
        if ref not in ready:
            continue
        try:
            problem = ray.get(ref)
        except ray.exceptions.RayError as exc:
            problem = missing_module(exc)  # the job's runtime_env itself broke the import: same advice
        if problem:
            where = node.get("NodeManagerAddress") or node["NodeID"][:12]
            raise UserError(f"Ray workers on node {where} cannot import smolcurate ({problem}); {SHIP_HINT}",
                            field="--ray-address")
