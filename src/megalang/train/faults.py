"""Crash-test hooks, parsed once per run from the environment into a `FaultPlan` that the trainer, the checkpoint
writer and the health guard are given; nothing reads these variables inside a step or a save.

- `MEGALANG_FAULT_AT_STEP=S`: stop (SystemExit) right after step S and its checkpoint.
- `MEGALANG_FAULT_SAVE=<point>[:<step>]`: SIGKILL at one point of a checkpoint save (SAVE_POINTS).
- `MEGALANG_KILL_AT=S:k` / `MEGALANG_STALL_AT=S:k:SECONDS`: SIGKILL or stall at micro-batch k of step S, on
  `MEGALANG_FAULT_RANK` only when set, once per marker file `MEGALANG_FAULT_ONCE` when set.
- `MEGALANG_FAULT_LOSS=<kind>:<step>[:<rank>],…`: NaN / Inf / spiked losses, NaN gradients (LOSS_FAULTS).

The reliability tests use them to prove that a run killed at any moment resumes exactly. SIGKILL, not an
exception: no `finally`, no atexit, no flush gets to tidy up, exactly like a node losing power or the OOM killer.
A malformed value is a bug in the test that set it, so parsing raises ValueError.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

STOP_AT_ENV = "MEGALANG_FAULT_AT_STEP"
FAULT_SAVE_ENV = "MEGALANG_FAULT_SAVE"
KILL_ENV = "MEGALANG_KILL_AT"
STALL_ENV = "MEGALANG_STALL_AT"
RANK_ENV = "MEGALANG_FAULT_RANK"
ONCE_ENV = "MEGALANG_FAULT_ONCE"  # the fault fires only while this file does not exist, and creates it, so the
# group torchrun restarts (--max-restarts) runs through the point the first group died at
FAULT_LOSS_ENV = "MEGALANG_FAULT_LOSS"

# In the order a save reaches them (train/checkpoint.py, store/checkpoints.py):
SAVE_POINTS = (
    "before_metadata",  # every rank's tensor files written, DCP's .metadata not yet (DCP writer's finish)
    "after_shards",  # DCP done (tensors + .metadata + JSON files), COMPLETE.json not yet written
    "before_rename",  # COMPLETE.json written inside step-N.tmp/, the folder not yet renamed to step-N/
    "during_retention",  # the new checkpoint complete; an old one half deleted (COMPLETE.json and .metadata gone)
)
# What each MEGALANG_FAULT_LOSS kind does to that step on that rank, before the health check sees it:
LOSS_FAULTS = (
    "nan",  # the loss reads NaN (gradients untouched): only this rank can tell, so the ranks must agree
    "inf",  # the loss reads +Inf
    "nangrad",  # this rank's local gradients and the grad norm are NaN, as after an overflow in backward
    "spike",  # the loss reads 100x its value (gradients untouched): what the spike guard looks for
)


@dataclass(frozen=True)
class FaultPlan:
    """The faults one run injects; the default plan injects none. Picklable: a checkpoint writer process
    carries its own copy."""

    stop_after: int | None = None
    save_point: str | None = None
    save_step: int | None = None  # None: at every save
    kill_at: tuple[int, int] | None = None
    stall_at: tuple[int, int, float] | None = None
    rank: int | None = None
    once_marker: str | None = None
    loss: tuple[tuple[str, int, int | None], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> FaultPlan:
        save = env.get(FAULT_SAVE_ENV) or ""
        point, _, at = save.partition(":")
        if save and point not in SAVE_POINTS:
            raise ValueError(f"{FAULT_SAVE_ENV}={save}: unknown point '{point}'; one of {', '.join(SAVE_POINTS)}")
        kill, stall, rank = env.get(KILL_ENV), env.get(STALL_ENV), env.get(RANK_ENV)
        return cls(
            stop_after=int(env[STOP_AT_ENV]) if env.get(STOP_AT_ENV) else None,
            save_point=point or None, save_step=int(at) if at else None,
            kill_at=_fields(KILL_ENV, kill, 2) if kill else None,
            stall_at=_fields(STALL_ENV, stall, 3) if stall else None,
            rank=int(rank) if rank not in (None, "") else None,
            once_marker=env.get(ONCE_ENV) or None,
            loss=_loss_faults(env.get(FAULT_LOSS_ENV) or ""),
        )

    def stops_after(self, step: int) -> bool:
        return self.stop_after == step

    def at_save(self, point: str, step: int, also_kill: int | None = None) -> None:
        """Die with SIGKILL at this save point (and step, when the plan names one); `also_kill` is the trainer's
        pid where this runs in a checkpoint writer process, so the crash takes the whole run down."""
        if self.save_point == point and self.save_step in (None, step):
            if also_kill is not None and also_kill != os.getpid():
                os.kill(also_kill, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    def in_step(self, step: int, micro: int, rank: int) -> None:
        """Kill or stall this process at micro-batch `micro` of optimizer step `step`, if the plan says so."""
        if (self.kill_at is None and self.stall_at is None) or (self.rank is not None and self.rank != rank):
            return
        if self.kill_at == (step, micro) and _first_time(self.once_marker):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.stall_at is not None and self.stall_at[:2] == (step, micro) and _first_time(self.once_marker):
            time.sleep(self.stall_at[2])

    def loss_kinds(self, step: int, rank: int) -> set[str]:
        """The loss faults planted at `step` on `rank`."""
        return {kind for kind, at, on_rank in self.loss if at == step and on_rank in (None, rank)}


def _fields(name: str, spec: str, count: int) -> tuple:
    parts = spec.split(":")
    if len(parts) != count:
        raise ValueError(f"{name}={spec}: expected {':'.join(['S', 'k', 'SECONDS'][:count])}")
    return (int(parts[0]), int(parts[1]), *(float(p) for p in parts[2:]))


def _loss_faults(spec: str) -> tuple[tuple[str, int, int | None], ...]:
    faults = []
    for item in filter(None, spec.split(",")):
        kind, _, rest = item.strip().partition(":")
        at, _, on_rank = rest.partition(":")
        if kind not in LOSS_FAULTS or not at.isdigit() or (on_rank and not on_rank.isdigit()):
            raise ValueError(f"{FAULT_LOSS_ENV}={spec}: '{item}' is not <kind>:<step>[:<rank>] with kind in "
                             f"{', '.join(LOSS_FAULTS)}")
        faults.append((kind, int(at), int(on_rank) if on_rank else None))
    return tuple(faults)


def _first_time(marker: str | None) -> bool:
    """True unless the marker file already exists; creates it atomically (O_EXCL), so of several processes
    racing for it exactly one fires."""
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
