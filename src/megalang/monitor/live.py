"""What the trainer asks of monitoring while it runs: the sink's backends built from `metrics.*`, timers for
data wait and checkpoints, host/GPU samples added to each logged line, and the thermal guard's pauses."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Callable

from megalang.config import MetricsConfig
from megalang.monitor.gpu import NvmlSampler, ThermalGuard, open_nvml_sampler
from megalang.monitor.metrics import MetricsBackend
from megalang.monitor.system import HostSampler

TENSORBOARD_DIR = "tensorboard"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_backends(cfg: MetricsConfig, run_dir: str | Path) -> list[MetricsBackend]:
    """TensorBoard when `metrics.tensorboard`, Prometheus when `metrics.port` is set (rank 0 only)."""
    backends: list[MetricsBackend] = []
    if cfg.tensorboard:
        from megalang.monitor.tensorboard import TensorBoardBackend

        backends.append(TensorBoardBackend(Path(run_dir) / TENSORBOARD_DIR))
    if cfg.port is not None:
        from megalang.monitor.prometheus import PrometheusBackend

        backends.append(PrometheusBackend(cfg.port, cfg.host))
    return backends


class RunMonitor:
    """One per training process; on ranks other than 0 (`enabled=False`) it only keeps the timers."""

    def __init__(self, cfg: MetricsConfig, device, backends: list[MetricsBackend] | None = None,
                 nvml: NvmlSampler | None = None, warn: Callable[[str], None] = _stderr,
                 sleep: Callable[[float], None] = time.sleep, enabled: bool = True):
        self.cfg, self.device, self.enabled = cfg, device, enabled
        self.backends = list(backends or [])
        self.host = HostSampler() if enabled and cfg.system else None
        self.nvml = nvml
        self.guard = ThermalGuard(cfg.guard_temp_c, cfg.guard_throttle, cfg.guard_samples, cfg.guard_pause_s, warn)
        self.sleep = sleep
        self.data_wait = 0.0
        self.steps = 0
        self.checkpoint_s: float | None = None
        for backend in self.backends:
            if hasattr(backend, "url"):
                warn(f"prometheus: serving {backend.url}")

    @contextlib.contextmanager
    def timed_data_wait(self):
        """Time spent blocked on the loader (host-side batch assembly and copy)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.data_wait += time.perf_counter() - started

    def checkpoint_done(self, seconds: float) -> None:
        self.checkpoint_s = seconds

    def after_step(self) -> float:
        """Called between steps; returns seconds paused by the guard (kept out of throughput)."""
        self.steps += 1
        if not (self.guard.tripped and self.guard.pause_s and self.nvml):
            return 0.0
        started = time.perf_counter()
        self.sleep(self.guard.pause_s)
        self.guard.pauses += 1
        self.guard.update(self.nvml.sample())  # cooled down yet?
        return time.perf_counter() - started

    def sample(self) -> dict[str, Any]:
        """Values added to the logged line: per-step data wait since the last line, the last checkpoint's
        duration, and host / GPU telemetry with the guard's state (peak memory is the trainer's own)."""
        values: dict[str, Any] = {"data_wait_s": self.data_wait / max(self.steps, 1)}
        self.data_wait, self.steps = 0.0, 0
        if self.checkpoint_s is not None:
            values["checkpoint_s"] = self.checkpoint_s
        if self.host is not None:
            values.update(self.host.sample())
        if self.nvml is not None and self.enabled:
            gpu = self.nvml.sample()
            self.guard.update(gpu)
            values.update(gpu)
            values.update(self.guard.values())
        return values


def disabled_monitor() -> RunMonitor:
    """Timers only: for trainers built without a run folder (tests, tools)."""
    import torch

    return RunMonitor(MetricsConfig(system=False), torch.device("cpu"), enabled=False)


def build_run_monitor(cfg: MetricsConfig, run_dir: str | Path, device, enabled: bool = True) -> RunMonitor:
    """The monitor and its backends for one training process (backends and NVML on rank 0 only)."""
    backends = build_backends(cfg, run_dir) if enabled else []
    nvml = open_nvml_sampler(device) if enabled and cfg.system else None
    return RunMonitor(cfg, device, backends, nvml, enabled=enabled)


def maybe_write_report(cfg: MetricsConfig, run_dir: str | Path, warn: Callable[[str], None] = _stderr) -> None:
    """`RUN/report.html` when `metrics.report`. The run is complete by now, so a failure here warns (the
    report can be rebuilt with `megalang report RUN`) instead of failing the run."""
    if not cfg.report:
        return
    from megalang.monitor.report import write_report

    try:
        write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - plotting must not turn a finished run into a failed one
        warn(f"report: could not write {Path(run_dir) / 'report.html'} ({type(e).__name__}: {e}); "
             f"run `megalang report {run_dir}` to retry")
