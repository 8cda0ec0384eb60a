"""Crash-test hooks: `MEGALANG_FAULT_SAVE=<point>[:<step>]` kills the process hard at one point of a save;
`MEGALANG_KILL_AT` / `MEGALANG_STALL_AT` kill or stall a rank inside a training step (see maybe_step_fault).

The reliability tests (tests/train/test_crash_consistency.py) use it to prove that a checkpoint save cut
short at any moment leaves a run that resumes from the last complete checkpoint. SIGKILL, not an exception:
no `finally`, no atexit, no flush gets to tidy up, exactly like a node losing power or the OOM killer.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_SAVE_ENV = "MEGALANG_FAULT_SAVE"
# In the order a save reaches them (train/checkpoint.py):
SAVE_POINTS = (
    "before_metadata",  # every rank's tensor files written, DCP's .metadata not yet (DCP writer's finish)
    "after_shards",  # DCP done (tensors + .metadata + JSON files), COMPLETE.json not yet written
    "before_rename",  # COMPLETE.json written inside step-N.tmp/, the folder not yet renamed to step-N/
    "during_retention",  # the new checkpoint complete; an old one half deleted (COMPLETE.json and .metadata gone)
)


def maybe_fault(point: str, step: int, also_kill: int | None = None) -> None:
    """Die with SIGKILL if MEGALANG_FAULT_SAVE names `point` (and `step`, when it gives one); `also_kill` is
    the trainer's pid where this runs in a checkpoint writer process, so the crash takes the whole run down.

    One environment lookup when unset. A malformed value is a bug in the test that set it, so it raises.
    """
    spec = os.environ.get(FAULT_SAVE_ENV)
    if not spec:
        return
    name, _, at = spec.partition(":")
    if name not in SAVE_POINTS:
        raise ValueError(f"{FAULT_SAVE_ENV}={spec}: unknown point '{name}'; one of {', '.join(SAVE_POINTS)}")
    if name == point and (not at or int(at) == step):
        if also_kill is not None and also_kill != os.getpid():
            os.kill(also_kill, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


# --- faults inside a training step (issue #4 promises 3, 7, 8) -----------------------------------------

KILL_ENV = "MEGALANG_KILL_AT"  # "S:k": SIGKILL at micro-batch k (0-based) of optimizer step S (1-based)
STALL_ENV = "MEGALANG_STALL_AT"  # "S:k:SECONDS": sleep that long there, as a rank stuck in I/O or a dead GPU would
RANK_ENV = "MEGALANG_FAULT_RANK"  # only this rank faults (unset: every rank that reaches the point)
ONCE_ENV = "MEGALANG_FAULT_ONCE"  # a marker file: the fault fires only while it does not exist, and creates it,
# so the group torchrun restarts (--max-restarts) runs through the point the first group died at


def maybe_step_fault(step: int, micro: int, rank: int) -> None:
    """Kill or stall this process at micro-batch `micro` of optimizer step `step`, if the environment asks.

    Called before each micro-batch is read; two environment lookups when unset. A malformed value is a bug
    in the test that set it, so it raises.
    """
    kill, stall = os.environ.get(KILL_ENV), os.environ.get(STALL_ENV)
    if not (kill or stall):
        return
    wanted_rank = os.environ.get(RANK_ENV)
    if wanted_rank not in (None, "") and int(wanted_rank) != rank:
        return
    if kill and _at(KILL_ENV, kill, 2)[:2] == (step, micro) and _first_time():
        os.kill(os.getpid(), signal.SIGKILL)
    if stall:
        at_step, at_micro, seconds = _at(STALL_ENV, stall, 3)
        if (at_step, at_micro) == (step, micro) and _first_time():
            time.sleep(seconds)


def _at(name: str, spec: str, fields: int) -> tuple:
    parts = spec.split(":")
    if len(parts) != fields:
        raise ValueError(f"{name}={spec}: expected {':'.join(['S', 'k', 'SECONDS'][:fields])}")
    return (int(parts[0]), int(parts[1]), *(float(p) for p in parts[2:]))


def _first_time() -> bool:
    """True unless MEGALANG_FAULT_ONCE names a marker that already exists; creates it atomically (O_EXCL),
    so of several processes racing for it exactly one fires."""
    marker = os.environ.get(ONCE_ENV)
    if not marker:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


# --- numerical faults (train/health.py; tests/train/test_health.py) ---------------------------------

FAULT_LOSS_ENV = "MEGALANG_FAULT_LOSS"
# `<kind>:<step>[:<rank>]`, comma-separated for several. What each does to that step on that rank (every rank
# when no rank is given), before the health check sees it:
LOSS_FAULTS = (
    "nan",  # the loss reads NaN (gradients untouched): only this rank can tell, so the ranks must agree
    "inf",  # the loss reads +Inf
    "nangrad",  # this rank's local gradients and the grad norm are NaN, as after an overflow in backward
    "spike",  # the loss reads 100x its value (gradients untouched): what the spike guard looks for
)


def loss_faults(step: int, rank: int) -> set[str]:
    """The MEGALANG_FAULT_LOSS kinds planted at `step` on `rank`; empty (one environment lookup) when unset."""
    spec = os.environ.get(FAULT_LOSS_ENV)
    if not spec:
        return set()
    kinds = set()
    for item in spec.split(","):
        kind, _, rest = item.strip().partition(":")
        at, _, on_rank = rest.partition(":")
        if kind not in LOSS_FAULTS or not at.isdigit() or (on_rank and not on_rank.isdigit()):
            raise ValueError(f"{FAULT_LOSS_ENV}={spec}: '{item}' is not <kind>:<step>[:<rank>] with kind in "
                             f"{', '.join(LOSS_FAULTS)}")
        if int(at) == step and (not on_rank or int(on_rank) == rank):
            kinds.add(kind)
    return kinds
