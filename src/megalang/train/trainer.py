"""`megalang train`: the training loop, one optimizer step at a time, in small named phases.

next_batch → forward_backward → optimizer_step → maybe_eval → log → maybe_save. Setup (train/setup.py) picks the
objective and the held-out loss once; the end of a run (summary.json, manifest) is train/summary.py. Re-running the
same command resumes from the newest complete checkpoint and reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from megalang.config import RunConfig
from megalang.evaluate.during_training import due_evals, run_evals
from megalang.monitor.flops import mfu
from megalang.monitor.progress import LineReporter, make_reporter
from megalang.parallel.distributed import (
    peak_memory_bytes,
    state_bytes,
    total_grad_norm,
    world_max,
    world_mean,
)
from megalang.parallel.timeouts import explain_collective_timeouts
from megalang.train.faults import STOP_AT_ENV, FaultPlan
from megalang.train.health import check_step, skip_update
from megalang.train.setup import deterministic_kernels, setup
from megalang.train.state import Trainer
from megalang.train.summary import finish

# --- the entry point --------------------------------------------------------------------------------


@explain_collective_timeouts  # a stalled rank: one line naming the rank and parallel.timeout_s, not a hang
def train(cfg: RunConfig, faults: FaultPlan | None = None) -> dict[str, Any]:
    """Train (or resume) the run in `cfg.run.dir`; return the summary also written to summary.json. `faults`:
    the crash tests' plan, read from the environment once here when not given (train/faults.py)."""
    started = time.perf_counter()
    with deterministic_kernels(cfg.train.deterministic):
        t = setup(cfg, FaultPlan.from_env() if faults is None else faults)
        try:
            with make_reporter(cfg.train.max_steps, t.step, cfg.train.progress) as report:
                if t.resumed_from is not None:
                    report.message(f"resuming {t.run_dir} from step {t.resumed_from}")
                while t.step < cfg.train.max_steps:
                    train_step(t, report)
                    if t.faults.stops_after(t.step):
                        raise SystemExit(f"{STOP_AT_ENV}={t.step}: stopping after step {t.step} (fault injection)")
            summary = finish(t, time.perf_counter() - started)
        finally:
            t.checkpointer.close()  # host copies and the writer process end with the run, a failed one too
            t.sink.close()
            t.group.close()
            if t.shard_cache is not None:
                t.shard_cache.close()  # read-ahead threads stop with the run
    return summary


def train_step(t: Trainer, report: LineReporter, hooks: bool = True) -> None:
    """One optimizer step and what follows it; host syncs happen only in `log`, `maybe_eval` and (unless
    health.nonfinite=off and no spike guard) the health check before the update. `hooks=False` (a federated
    site's local steps, federated/local.py): no evals and no checkpoint; the site saves the round's global weights."""
    step = t.step + 1
    logging = step == 1 or step % t.cfg.train.log_every == 0 or step == t.cfg.train.max_steps
    loss = forward_backward(t)
    lr = t.optimizer.param_groups[0]["lr"]
    grad_norm = optimizer_step(t, need_norm=logging, loss=loss)
    t.step, t.tokens_seen = step, t.tokens_seen + t.tokens_per_step
    t.clock.steps += 1
    t.clock.paused += t.monitor.after_step()  # the thermal guard's pause, if any, is not training time
    val = maybe_eval(t) if hooks else None
    task_evals = maybe_run_task_evals(t) if hooks else {}  # recipe `evals:` sets, {} when none are due
    if logging or val is not None or task_evals:
        log(t, report, loss, lr, grad_norm, val, task_evals)
    if hooks:
        maybe_save(t)


# --- phases -----------------------------------------------------------------------------------------


def next_batch(t: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    with t.monitor.timed_data_wait():
        batch = next(t.loader)
    if isinstance(batch, dict):  # SFT rows: input_ids, labels, position_ids (data/sft.py)
        return {k: v.to(t.device, non_blocking=True) for k, v in batch.items()}
    input_ids, labels = batch
    # Pinned host memory lets the host-to-device copy overlap with compute (CUDA only).
    if t.device.type == "cuda":
        return input_ids.pin_memory().to(t.device, non_blocking=True), labels.pin_memory().to(t.device, non_blocking=True)
    return input_ids, labels


def forward_backward(t: Trainer) -> torch.Tensor:
    """Accumulate gradients over `accum` micro-batches; return the mean loss as a tensor (no host sync)."""
    if t.schedule is not None:
        return forward_backward_pipelined(t)
    total = torch.zeros((), device=t.device)
    for micro in range(t.accum):
        t.faults.in_step(t.step + 1, micro, t.group.rank)  # crash tests only (train/faults.py)
        batch = next_batch(t)
        with t.autocast():
            loss = t.objective(t.model, batch)  # chosen at setup: next-token CE, SFT, distillation
        scaled = loss / t.accum  # every micro-batch has the same token count, so this is the token mean
        (t.scaler.scale(scaled) if t.scaler else scaled).backward()
        total += loss.detach()
    return total / t.accum


def forward_backward_pipelined(t: Trainer) -> torch.Tensor:
    """The `accum` micro-batches go through the pipeline schedule as its microbatches (same samples, same
    order as one process accumulating them). Only the last stage sees losses; other stages return 0."""
    t.faults.in_step(t.step + 1, 0, t.group.rank)  # crash tests only: the schedule runs all micro-batches
    batches = [next_batch(t) for _ in range(t.accum)]
    input_ids, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    losses: list[torch.Tensor] = []
    kwargs = {"target": labels, "losses": losses} if t.last_stage else {}
    with t.autocast():
        t.schedule.step(*([input_ids] if t.first_stage else []), **kwargs)
    if not t.last_stage:
        return torch.zeros((), device=t.device)
    return torch.stack([loss.detach() for loss in losses]).mean()


def optimizer_step(t: Trainer, need_norm: bool, loss: torch.Tensor | None = None) -> torch.Tensor | None:
    """Clip, step, advance the schedule. Returns the pre-clip grad norm (a tensor; computed when clipping
    or when the step is logged). A step the health guard rejects (NaN/Inf, loss spike) skips the update."""
    if t.scaler:
        t.scaler.unscale_(t.optimizer)  # clip the true gradients, not the loss-scaled ones
    params = [p for p in t.model.parameters() if p.grad is not None]
    norm = None
    clip = t.cfg.optimizer.grad_clip
    if clip > 0 or need_norm or t.health.active:
        # One norm over every shard and stage; clipping then scales the local gradients by the same factor.
        pp_group = t.mesh["pp"].get_group() if t.schedule is not None else None
        norm = total_grad_norm(params, pp_group)
        if clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm, foreach=True)
    if need_norm:
        t.state_bytes = state_bytes(t.model, t.optimizer)  # gradients still held: measured before zero_grad
    step = t.step + 1
    if check_step(t.health, step, loss, norm, rank=t.group.rank, world=t.group.world, check_norm=t.scaler is None,
                  contributors=t.dims.world // t.dims.pp if t.dims else 1, planted=t.faults.loss_kinds(step, t.group.rank),
                  model=t.model):  # agreed over all ranks; may raise NumericalError (train/health.py)
        skip_update(t.optimizer, t.scheduler, t.scaler)
        return norm
    t.checkpointer.wait_staged()  # an async checkpoint's host copy must be taken before weights change
    if t.scaler:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    return norm


def maybe_eval(t: Trainer) -> dict[str, float] | None:
    """Val metrics every `eval_every` steps (0: only at the end) and always at the last step: {"val_loss": …},
    plus val_accuracy and val_macro_f1 for a classifier."""
    every, last = t.cfg.train.eval_every, t.step == t.cfg.train.max_steps
    if t.val_split is None or not (last or (every and t.step % every == 0)):
        return None
    started = time.perf_counter()
    result = t.validate(t)  # chosen at setup: pretraining windows, SFT rows or a classifier's labelled examples
    t.clock.paused += time.perf_counter() - started
    if result is None:
        return None
    return result if isinstance(result, dict) else {"val_loss": result}


def maybe_run_task_evals(t: Trainer) -> dict[str, float]:
    """The recipe's `evals:` sets due at this step, scored on this model; their time is not training time.
    Skipped under pipeline parallelism: each stage holds only part of the model."""
    due = due_evals(t.cfg.evals, t.step, t.cfg.train.max_steps)
    if not due or t.schedule is not None:
        return {}
    started = time.perf_counter()
    try:
        return run_evals(due, t.model, t.run_dir, t.cfg.train.seq_len, t.autocast())
    finally:
        t.clock.paused += time.perf_counter() - started


def log(
    t: Trainer, report: LineReporter, loss: torch.Tensor, lr: float, grad_norm, val: dict | None, evals: dict | None = None
) -> None:
    """The only place a step reads values back from the device (.item() syncs)."""
    if t.device.type == "cuda":  # the clock must time finished steps, not queued ones (.item() below waits anyway)
        torch.cuda.synchronize(t.device)
    tokens_per_s, step_time = t.clock.measure(t.tokens_per_step)
    if t.dims is not None:
        loss = world_mean(loss, t.dims.world // t.dims.pp)  # the data ranks' mean, from the last stage
    values = {
        "loss": loss.item(),
        "lr": lr,
        "grad_norm": grad_norm.item() if grad_norm is not None else None,
        "tokens": t.tokens_seen,
        "tokens_per_s": tokens_per_s,
        "mfu": mfu(tokens_per_s, t.flops_per_token, t.peak),
        "step_time": step_time,
        "epoch": t.loader.consumed / t.loader.num_samples,
    }
    values["peak_memory_bytes"] = world_max(peak_memory_bytes(t.device))  # the largest rank's
    if t.state_bytes is not None:
        values["state_bytes"] = world_max(t.state_bytes)
    values.update(t.monitor.sample())
    values.update(t.health.metrics())  # skipped_steps, spike_skipped_steps
    if t.finetune is not None:
        values.update(t.finetune.metrics())  # DP: epsilon spent so far
    values.update(val or {})
    values.update(evals or {})
    report.update(t.step, t.sink.log(t.step, **values))


def maybe_save(t: Trainer) -> None:
    """Every `checkpoint.every` steps, and always at the last step (the run's product is its final weights)."""
    every, last = t.cfg.checkpoint.every, t.step == t.cfg.train.max_steps
    if last or (every and t.step % every == 0):
        save_checkpoint(t)


def save_checkpoint(t: Trainer) -> None:
    """A checkpoint of the model as it is now, at `t.step`; its time is not training time."""
    started = time.perf_counter()
    t.checkpointer.save(  # finishes a save still in flight first: one at a time
        t.step, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, loader=t.loader,
        tokens_seen=t.tokens_seen, run_config=t.run_config,
        extra={"health": t.health.state_dict(), **({"scaler": t.scaler.state_dict()} if t.scaler else {})},
    )
    t.clock.paused += time.perf_counter() - started
    t.monitor.checkpoint_done(time.perf_counter() - started)


