"""Where the data stages run their tasks: in this process, in a pool of processes, or as Ray tasks.

Every executor returns results in task order; together with tasks that depend only on the input (see
`plan_tasks`) that is what makes the output the same whichever executor and however many workers ran it.
On Ray a task whose worker dies (OOM killer, lost node) is run again, up to TASK_RETRIES times: every task writes
only its own files, whole, so a retry replaces whatever the dead attempt left.

`MEGALANG_KILL_TASK=PHASE:INDEX:MARKER` (crash tests only): on Ray, task INDEX of the run_tasks call named PHASE
SIGKILLs its own worker while the file MARKER does not exist, creating it first, so the retry runs through.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from megalang.errors import UserError

TASK_RETRIES = 3  # Ray re-runs a task whose worker process died this many times before the stage fails
KILL_TASK_ENV = "MEGALANG_KILL_TASK"


def resolve_workers(workers: int) -> int:
    """0 means every core this process may use (the affinity mask, not the machine's count)."""
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def run_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], executor: str, workers: int, progress: bool,
              total_bytes: int = 0, phase: str = "prepare.map") -> Iterator[Any]:
    """Yield fn(task) for every task, in task order, with a docs/s and MB/s progress bar on a terminal (the results
    then need `documents_in` and `bytes_in`). `phase` names the call for MEGALANG_KILL_TASK."""
    if executor == "ray":
        results = _run_ray(fn, tasks, workers, phase)
    elif workers <= 1 or len(tasks) <= 1:
        results = map(fn, tasks)
    else:
        results = _run_pool(fn, tasks, workers)
    bar = Progress(total_bytes) if progress and sys.stderr.isatty() else None
    try:
        for result in results:
            if bar:
                bar.update(result.documents_in, result.bytes_in)
            yield result
    finally:
        if bar:
            bar.close()


def _run_pool(fn, tasks, workers) -> Iterator[Any]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: the parent may hold threads (pyarrow, torch) that a forked child would inherit locked.
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(fn, tasks)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("executor=ray: Ray is not installed; pip install 'megalang[ray]' or use executor=local") from None
    return ray


@contextmanager
def executor_session(executor: str, workers: int) -> Iterator[None]:
    """Hold one Ray session across every phase of a stage (starting a local Ray takes seconds, so the phases share
    it). Joins an already initialised Ray or `$RAY_ADDRESS`, else starts a local Ray with `workers` CPUs, and shuts
    down only what it started. For executor=local it does nothing."""
    if executor != "ray":
        yield
        return
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=None if os.environ.get("RAY_ADDRESS") else workers, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()


def _run_ray(fn, tasks, workers, phase) -> Iterator[Any]:
    ray = _import_ray()
    kill = kill_request(phase)
    with executor_session("ray", workers):
        remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_call)
        refs = [remote.remote(fn, t, kill[1] if kill and kill[0] == i else None) for i, t in enumerate(tasks)]
        for ref in refs:
            yield _ray_get(ray, ref)


def kill_request(phase: str, env=os.environ) -> tuple[int, str] | None:
    """(task index, marker file) from MEGALANG_KILL_TASK when it names `phase`, else None."""
    value = env.get(KILL_TASK_ENV)
    if not value:
        return None
    name, index, marker = value.split(":", 2)
    return (int(index), marker) if name == phase else None


def _call(fn, task, kill_marker: str | None = None):
    if kill_marker and not os.path.exists(kill_marker):
        open(kill_marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind, as when the OOM killer takes the worker
    return fn(task)


def _ray_get(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = e.as_instanceof_cause()
        if isinstance(cause, UserError) or isinstance(getattr(e, "cause", None), UserError):
            raise UserError(str(getattr(e, "cause", cause))) from None
        raise


class Progress:
    """A rich progress bar over input bytes, showing documents/s and MB/s."""

    def __init__(self, total_bytes: int):
        from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.start = time.perf_counter()
        self.docs = self.bytes = 0
        self.bar = RichProgress(TextColumn("prepare"), BarColumn(), TextColumn("{task.fields[rate]}"),
                                TimeRemainingColumn(), transient=True)
        self.task = self.bar.add_task("prepare", total=max(total_bytes, 1), rate="")
        self.bar.start()

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes
        dt = max(time.perf_counter() - self.start, 1e-9)
        self.bar.update(self.task, advance=nbytes, rate=f"{self.docs / dt:,.0f} docs/s  {self.bytes / dt / 1e6:.1f} MB/s")

    def close(self) -> None:
        self.bar.stop()
