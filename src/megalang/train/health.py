"""Numerical health of every optimizer step (issue #4, promise 6): NaN/Inf in the loss or grad norm, and loss
spikes, decided once for all ranks before the update so that every rank skips, or stops, together.

The check needs the loss and grad norm on the host each step: one small all_reduce (a flag per rank plus the
loss) and one device-to-host sync per step. `health.nonfinite=off` with `health.spike_zscore=0` removes both (the
fastest path; a NaN then flows into the weights unnoticed until the next logged loss).

A skipped step makes no update (gradients are dropped), but the LR schedule and the data loader still advance:
the batch is consumed once and never retried, so the sample order of the run stays the same function of
(seed, step) whether or not steps were skipped, and a resumed run skips exactly the same steps.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from megalang.config import HealthConfig
from megalang.errors import UserError

_LOSS, _NORM = 1.0, 2.0  # what a rank found non-finite, added into its slot of the flag vector
_SKIPPED_AT_KEPT = 100  # the summary lists the steps of the last this-many skips


class NumericalError(UserError):
    """The run stopped on non-finite values or too many skipped steps: exit 2, one line naming rank and step.
    Raised before the update and before any save, so no checkpoint holds the bad state."""


@dataclass
class HealthGuard:
    """The policy (from `train.*`) and the counters; the counters travel in each checkpoint's trainer state,
    so a resumed run makes the same skip decisions as an uninterrupted one."""

    nonfinite: str = "off"
    max_skipped: int = 5
    spike_zscore: float = 0.0
    spike_window: int = 50
    skipped: int = 0  # non-finite steps skipped in total
    spikes: int = 0  # spike steps skipped in total
    consecutive: int = 0  # skipped steps in a row (either kind), reset by an accepted step
    recent: list[float] = field(default_factory=list)  # losses (world mean) of the last accepted steps
    skipped_at: list[int] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.nonfinite != "off" or self.spike_zscore > 0

    def is_spike(self, loss: float) -> bool:
        """An upward outlier: z-score above the threshold over a full window (a falling loss is never one)."""
        if self.spike_zscore <= 0 or len(self.recent) < self.spike_window:
            return False
        mean = sum(self.recent) / len(self.recent)
        std = math.sqrt(sum((x - mean) ** 2 for x in self.recent) / len(self.recent))
        return std > 0 and (loss - mean) / std > self.spike_zscore

    def accept(self, loss: float) -> None:
        self.consecutive = 0
        if self.spike_zscore > 0:
            self.recent = (self.recent + [loss])[-self.spike_window:]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in ("skipped", "spikes", "consecutive", "recent", "skipped_at")}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        for key, value in (state or {}).items():
            setattr(self, key, value)
        self.recent = self.recent[-self.spike_window:]  # the window may have been shortened on resume

    def metrics(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped, "spike_skipped_steps": self.spikes} if self.active else {}

    def summary(self) -> dict[str, Any]:
        if not self.active:
            return {}
        return {"skipped_steps": self.skipped, "spike_skipped_steps": self.spikes, "skipped_at": self.skipped_at}


def build_health_guard(hc: HealthConfig) -> HealthGuard:
    return HealthGuard(hc.nonfinite, hc.max_skipped_steps, hc.spike_zscore, hc.spike_window)


def check_step(guard: HealthGuard, step: int, loss: torch.Tensor | None, norm: torch.Tensor | None, *, rank: int,
               world: int, contributors: int, check_norm: bool = True, planted: set[str] = frozenset(),
               model=None) -> str | None:
    """Decide, identically on every rank, whether the step about to update the weights is skipped: the reason
    to skip it, or None to update. Updates the guard's counters; raises NumericalError (before the update,
    before any save) when the policy says stop. `check_norm` is False when the norm cannot be trusted (fp16 loss
    scaling);
    `planted`: the crash tests' loss faults for this step and rank (train/faults.py), applied to `model`."""
    if not guard.active or loss is None:
        return None
    if planted:
        loss, norm = apply_loss_faults(planted, loss, norm, model)
    bad, mean_loss = agree(loss, norm if check_norm else None, rank, world, contributors)
    if bad:
        if guard.nonfinite == "off":
            return None  # only the spike guard is on; a non-finite loss must not enter its window either
        what = "; ".join(f"{kind} on rank {r}" for r, kind in bad.items())
        if guard.nonfinite == "stop":
            raise NumericalError(
                f"step {step}: non-finite {what} (health.nonfinite=stop); stopped before the update, nothing saved "
                "after the last checkpoint. Lower optimizer.lr, keep optimizer.grad_clip > 0 or check the data, then re-run "
                "(it resumes from the newest checkpoint); health.nonfinite=skip skips such steps instead"
            )
        guard.skipped += 1
        reason = f"non-finite {what}"
    elif guard.is_spike(mean_loss):
        guard.spikes += 1
        reason = f"loss spike {mean_loss:.4g} (z-score above health.spike_zscore={guard.spike_zscore})"
    else:
        guard.accept(mean_loss)
        return None
    guard.consecutive += 1
    guard.skipped_at = (guard.skipped_at + [step])[-_SKIPPED_AT_KEPT:]
    if guard.consecutive > guard.max_skipped:
        raise NumericalError(
            f"step {step}: {reason}; {guard.consecutive} bad steps in a row (health.max_skipped_steps="
            f"{guard.max_skipped}); stopped before the update, nothing saved after the last checkpoint. Lower "
            "optimizer.lr or check the data, then re-run (it resumes from the newest checkpoint)"
        )
    if rank == 0:
        print(f"step {step}: {reason}; update skipped ({guard.consecutive} in a row, "
              f"{guard.skipped + guard.spikes} in total)", file=sys.stderr, flush=True)
    return reason


def agree(loss: torch.Tensor, norm: torch.Tensor | None, rank: int, world: int,
          contributors: int) -> tuple[dict[int, str], float]:
    """({rank: what was non-finite there}, world-mean loss), the same on every rank: one all_reduce of a
    (world + 1)-vector — each rank's flag in its own slot, the losses summed in the last — then one host read.
    Ranks holding no loss (pipeline stages before the last) add 0, as in the trainer's `log`; `contributors`
    is the number of ranks that hold one (data-parallel ranks)."""
    vec = torch.zeros(world + 1, dtype=torch.float64, device=loss.device)
    flag = (~torch.isfinite(loss.detach())).double() * _LOSS
    if norm is not None:
        flag = flag + (~torch.isfinite(norm.detach().to(loss.device))).double() * _NORM
    vec[rank] = flag
    vec[world] = loss.detach().double()
    if world > 1:
        dist.all_reduce(vec, op=dist.ReduceOp.SUM)  # the world group: every rank, every parallel dimension
    values = vec.tolist()  # the one host sync of the check
    bad = {r: _describe(values[r]) for r in range(world) if values[r]}
    return bad, values[world] / contributors


def _describe(flag: float) -> str:
    return {_LOSS: "loss", _NORM: "grad norm"}.get(flag, "loss and grad norm")


def skip_update(optimizer, scheduler, scaler=None) -> None:
    """Drop the step's gradients; the LR schedule (and the fp16 loss scale) move on as after an update."""
    optimizer.zero_grad(set_to_none=True)
    if scaler:
        scaler.update()  # unscale_ recorded this step's inf checks; update backs the scale off if it found any
    scheduler.step()


def apply_loss_faults(kinds: set[str], loss: torch.Tensor, norm: torch.Tensor | None, model):
    """The reliability tests' planted NaN, Inf and spikes (MEGALANG_FAULT_LOSS, train/faults.py)."""
    if "nan" in kinds:
        loss = torch.full_like(loss, float("nan"))
    if "inf" in kinds:
        loss = torch.full_like(loss, float("inf"))
    if "spike" in kinds:
        loss = loss * 100
    if "nangrad" in kinds:
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    grad = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                    grad.fill_(float("nan"))
        norm = torch.full((), float("nan"), device=loss.device)
    return loss, norm
