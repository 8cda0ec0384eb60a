"""What the training phases share: the `Trainer` state built at setup, and the throughput clock."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from megalang.config import RunConfig
from megalang.data.loader import SampleLoader
from megalang.data.remote import ShardCache
from megalang.data.shards import TokenSplit
from megalang.monitor.live import RunMonitor, disabled_monitor
from megalang.monitor.metrics import MetricsSink
from megalang.parallel.distributed import (
    ProcessGroup,
)
from megalang.parallel.mesh import ParallelDims
from megalang.store.run_dir import RunDir
from megalang.train.checkpoint import Checkpointer
from megalang.train.faults import FaultPlan
from megalang.train.finetune import FineTune
from megalang.train.health import HealthGuard


@dataclass
class Throughput:
    """Tokens/s between log steps, excluding eval and checkpoint time; the first interval (allocation,
    compilation, warm caches) is kept out of the steady-state mean."""

    last: float = field(default_factory=time.perf_counter)
    steps: int = 0
    paused: float = 0.0
    intervals: int = 0
    steady_tokens: int = 0
    steady_seconds: float = 0.0
    first_rate: float | None = None

    def measure(self, tokens_per_step: int) -> tuple[float, float]:
        """(tokens/s, seconds per step) since the previous call; resets the interval."""
        now = time.perf_counter()
        seconds = max(now - self.last - self.paused, 1e-9)
        tokens = self.steps * tokens_per_step
        rate, step_time = tokens / seconds, seconds / max(self.steps, 1)
        if self.intervals == 0:
            self.first_rate = rate
        else:
            self.steady_tokens += tokens
            self.steady_seconds += seconds
        self.intervals += 1
        self.last, self.steps, self.paused = now, 0, 0.0
        return rate, step_time

    def steady_rate(self) -> float | None:
        return self.steady_tokens / self.steady_seconds if self.steady_seconds else self.first_rate


@dataclass
class Trainer:
    """Everything the phases share. Built by `setup`, advanced by `train_step`."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    loader: SampleLoader
    val_split: TokenSplit | None
    sink: MetricsSink
    run_config: dict[str, Any]
    accum: int
    flops_per_token: float
    peak: float | None
    step: int = 0
    tokens_seen: int = 0
    resumed_from: int | None = None
    clock: Throughput = field(default_factory=Throughput)
    group: ProcessGroup = field(default_factory=lambda: ProcessGroup(0, 1, owned=False))
    dims: ParallelDims | None = None  # None: one process
    mesh: Any = None
    schedule: Any = None  # pipelining schedule (parallel.pp > 1); the model is then this rank's stage
    last_stage: bool = True  # holds the loss (always, without pipeline parallel)
    first_stage: bool = True
    state_bytes: int | None = None  # params + grads + optimizer state on this rank, measured at the last log
    checkpointer: Checkpointer = None  # saves; owns async-save buffers, writer and the save in flight
    monitor: RunMonitor = field(default_factory=disabled_monitor)  # backends, telemetry, thermal guard (#8)
    finetune: FineTune | None = None  # DP accountant, SFT counts (train/finetune.py)
    # The run's objective, chosen once at setup: objective(model, batch) -> loss (train/objectives.py), and its
    # held-out evaluation validate(trainer) -> val_loss or {metric: value} | None (train/validate.py, SFT rows' in
    # train/finetune.py, a classifier's val_loss/val_accuracy/val_macro_f1 in train/classifier.py).
    objective: Callable[[Any, Any], torch.Tensor] | None = None
    validate: Callable[[Any], float | dict[str, float] | None] | None = None
    health: HealthGuard = field(default_factory=HealthGuard)  # NaN/Inf and spike skips (train/health.py, #4)
    faults: FaultPlan = field(default_factory=FaultPlan)  # crash tests only (train/faults.py)
    document_eos: int | None = None  # train.document_mask: the EOS id documents end with (train/objectives.py)
    shard_cache: ShardCache | None = None  # data.shards URL: local copies and read-ahead threads (data/remote.py)

    @property
    def run(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def tokens_per_step(self) -> int:
        return self.run_config["derived"]["global_batch_tokens"]

    def autocast(self):
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)




