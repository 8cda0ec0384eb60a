"""`megalang train`: the training loop, in small named phases, and the run folder it fills.

next_batch → forward_backward → optimizer_step → maybe_eval → log → maybe_save. Re-running the same
command resumes from the newest complete checkpoint and reproduces an uninterrupted run bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang.artifacts import MANIFEST, describe_input, fsync_dir, sha256_file, write_json_atomic, write_manifest
from megalang.config import RunConfig
from megalang.data.loader import SampleLoader, eval_batches, num_windows
from megalang.data.integrity import verify_shards
from megalang.data.shards import TokenSplit, open_split
from megalang.errors import UserError
from megalang.evaluate.during_training import maybe_run_evals
from megalang.model.build import build_model, special_ids
from megalang.model.presets import get_preset
from megalang.monitor.flops import flops_per_token, maybe_warn_emulated_bf16, mfu, peak_flops
from megalang.monitor.live import RunMonitor, build_run_monitor, disabled_monitor, maybe_write_report
from megalang.monitor.report import clear_report
from megalang.monitor.metrics import METRICS_FILE, MetricsSink, read_metrics
from megalang.monitor.progress import LineReporter, make_reporter
from megalang.parallel.build import build_parallel_model
from megalang.parallel.distributed import (
    ProcessGroup,
    barrier,
    local_bytes,
    maybe_init_process_group,
    peak_memory_bytes,
    state_bytes,
    total_grad_norm,
    world_max,
    world_mean,
)
from megalang.parallel.mesh import ParallelDims, build_mesh, data_rank, resolve_dims
from megalang.parallel.parallelize import parallelize
from megalang.parallel.timeouts import explain_collective_timeouts
from megalang.train.checkpoint import (
    complete_checkpoints,
    load_checkpoint,
    read_run_config,
    check_shared_memory,
    release_staging,
    remove_stale_tmp,
    resume_checkpoint,
    save_checkpoint,
)
from megalang.train.checkpoint_integrity import recorded_files
from megalang.train.optim import build_optimizer, build_scheduler
from megalang.train.health import HealthGuard, build_health_guard, maybe_skip_step
from megalang.train.loss import cross_entropy, lm_loss
from megalang.train import compat, faults, finetune

SUMMARY = "summary.json"
CONFIG_FILE = "config.yaml"
TOKENIZER_DIR = "tokenizer"
FAULT_ENV = "MEGALANG_FAULT_AT_STEP"  # crash-test hook: SystemExit right after this step (and its checkpoint)


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
    pending_save: Any = None  # an async checkpoint still being written (checkpoint.async_save)
    monitor: RunMonitor = field(default_factory=disabled_monitor)  # backends, telemetry, thermal guard (#8)
    finetune: finetune.FineTune | None = None  # loss function, DP accountant, SFT counts (train/finetune.py, #6)
    health: HealthGuard = field(default_factory=HealthGuard)  # NaN/Inf and spike skips (train/health.py, #4)

    @property
    def tokens_per_step(self) -> int:
        return self.run_config["derived"]["global_batch_tokens"]

    def autocast(self):
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)


# --- the entry point --------------------------------------------------------------------------------


@explain_collective_timeouts  # a stalled rank: one line naming the rank and parallel.timeout_s, not a hang
def train(cfg: RunConfig) -> dict[str, Any]:
    """Train (or resume) the run in `cfg.run.dir`; return the summary also written to summary.json."""
    started = time.perf_counter()
    t = setup(cfg)
    fault_at = int(os.environ.get(FAULT_ENV, "0") or 0)
    try:
        with make_reporter(cfg.train.max_steps, t.step, cfg.train.progress) as report:
            if t.resumed_from is not None:
                report.message(f"resuming {t.run_dir} from step {t.resumed_from}")
            while t.step < cfg.train.max_steps:
                train_step(t, report)
                if fault_at and t.step == fault_at:
                    raise SystemExit(f"{FAULT_ENV}={fault_at}: stopping after step {fault_at} (fault injection)")
        summary = finish(t, time.perf_counter() - started)
    finally:
        release_staging()  # host copies and the writer process end with the run, a failed one too
        t.sink.close()
        t.group.close()
    return summary


def train_step(t: Trainer, report: LineReporter) -> None:
    """One optimizer step and what follows it; host syncs happen only in `log`, `maybe_eval` and (unless
    train.nonfinite=off and no spike guard) the health check before the update."""
    step = t.step + 1
    logging = step == 1 or step % t.cfg.train.log_every == 0 or step == t.cfg.train.max_steps
    loss = forward_backward(t)
    lr = t.optimizer.param_groups[0]["lr"]
    grad_norm = optimizer_step(t, need_norm=logging, loss=loss)
    t.step, t.tokens_seen = step, t.tokens_seen + t.tokens_per_step
    t.clock.steps += 1
    t.clock.paused += t.monitor.after_step()  # the thermal guard's pause, if any, is not training time
    val_loss = maybe_eval(t)
    task_evals = maybe_run_evals(t)  # recipe `evals:` sets (evaluate/during_training.py), {} when none are due
    if logging or val_loss is not None or task_evals:
        log(t, report, loss, lr, grad_norm, val_loss, task_evals)
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
        faults.maybe_step_fault(t.step + 1, micro, t.group.rank)  # crash tests only (train/faults.py)
        batch = next_batch(t)
        with t.autocast():
            if t.finetune is not None:  # the run's objective: masked SFT CE, distillation (train/objectives.py)
                loss = t.finetune.objective(t.model, batch)
            elif t.cfg.train.fused_loss:  # output layer + loss in token chunks, no full logits (train/loss.py)
                input_ids, labels = batch
                loss = lm_loss(t.model, labels, input_ids=input_ids)
            else:
                input_ids, labels = batch
                loss = cross_entropy(t.model(input_ids=input_ids).logits, labels)
        scaled = loss / t.accum  # every micro-batch has the same token count, so this is the token mean
        (t.scaler.scale(scaled) if t.scaler else scaled).backward()
        total += loss.detach()
    return total / t.accum


def forward_backward_pipelined(t: Trainer) -> torch.Tensor:
    """The `accum` micro-batches go through the pipeline schedule as its microbatches (same samples, same
    order as one process accumulating them). Only the last stage sees losses; other stages return 0."""
    faults.maybe_step_fault(t.step + 1, 0, t.group.rank)  # crash tests only: the schedule runs all micro-batches
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
    if t.cfg.train.grad_clip > 0 or need_norm or t.health.active:
        # One norm over every shard and stage; clipping then scales the local gradients by the same factor.
        pp_group = t.mesh["pp"].get_group() if t.schedule is not None else None
        norm = total_grad_norm(params, pp_group)
        if t.cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, t.cfg.train.grad_clip, norm, foreach=True)
    if need_norm:
        t.state_bytes = state_bytes(t.model, t.optimizer)  # gradients still held: measured before zero_grad
    if maybe_skip_step(t, loss, norm):  # agreed over all ranks; may raise NumericalError (train/health.py)
        return norm
    if t.pending_save is not None:
        t.pending_save.wait_staged()  # an async checkpoint's host copy must be taken before weights change
    if t.scaler:
        t.scaler.step(t.optimizer)
        t.scaler.update()
    else:
        t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    return norm


def maybe_eval(t: Trainer) -> float | None:
    """Val loss every `eval_every` steps (0: only at the end) and always at the last step."""
    every, last = t.cfg.train.eval_every, t.step == t.cfg.train.max_steps
    if t.val_split is None or not (last or (every and t.step % every == 0)):
        return None
    started = time.perf_counter()
    loss = evaluate_loss(t)
    t.clock.paused += time.perf_counter() - started
    return loss


@torch.no_grad()
def evaluate_loss(t: Trainer) -> float | None:
    """Token-mean cross-entropy over the fixed val windows: each data rank scores its share, then the sums
    and counts are added over the world (tensor-parallel ranks count their replica's share once each, which
    divides out)."""
    if isinstance(t.val_split, finetune.SftVal):  # assistant tokens only, rows as in training
        return finetune.evaluate_sft_loss(t)
    t.model.eval()
    # A pipeline scores val batches in groups of `accum` micro-batches: ask for at least one group.
    wanted = t.cfg.train.eval_batches if t.schedule is None else max(t.cfg.train.eval_batches, t.accum)
    batches = eval_batches(t.val_split, t.cfg.train.seq_len, t.cfg.train.micro_batch_size, wanted,
                           t.loader.rank, t.loader.world)
    if t.schedule is not None:
        total, count = evaluate_pipelined(t, batches)
    else:
        total, count = torch.zeros((), device=t.device, dtype=torch.float64), 0
        for input_ids, labels in batches:
            input_ids, labels = input_ids.to(t.device), labels.to(t.device)
            with t.autocast():
                total += lm_loss(t.model, labels, reduction="sum", input_ids=input_ids)
            count += labels.numel()
    t.model.train()
    if t.dims is not None:
        pair = world_mean(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=t.device)]), 1)
        total, count = pair[0], pair[1].item()
    return total.item() / count if count else None  # too few val windows for one pipeline group: no val loss


def evaluate_pipelined(t: Trainer, batches) -> tuple[torch.Tensor, int]:
    """(CE sum, token count) through the pipeline's forward-only schedule. The stages' buffers are sized for
    the training microbatch, so val batches go in groups of `accum` full micro-batches (a short tail is
    left out). Only the last stage holds losses; other stages return zeros and add nothing."""
    total, count = torch.zeros((), device=t.device, dtype=torch.float64), 0
    full = [b for b in batches if len(b[0]) == t.cfg.train.micro_batch_size]
    for i in range(0, len(full) - t.accum + 1, t.accum):
        group = full[i:i + t.accum]
        input_ids, labels = torch.cat([b[0] for b in group]).to(t.device), torch.cat([b[1] for b in group]).to(t.device)
        losses: list[torch.Tensor] = []
        kwargs = {"target": labels, "losses": losses} if t.last_stage else {}
        with t.autocast():
            t.schedule.eval(*([input_ids] if t.first_stage else []), **kwargs)
        if t.last_stage:  # equal-size microbatches: the token sum is the mean loss times the tokens
            total += torch.stack(losses).double().mean() * labels.numel()
            count += labels.numel()
    return total, count


def log(
    t: Trainer, report: LineReporter, loss: torch.Tensor, lr: float, grad_norm, val_loss: float | None, evals: dict | None = None
) -> None:
    """The only place a step reads values back from the device (.item() syncs)."""
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
    if val_loss is not None:
        values["val_loss"] = val_loss
    values.update(evals or {})
    report.update(t.step, t.sink.log(t.step, **values))


def maybe_save(t: Trainer) -> None:
    """Every `checkpoint.every` steps, and always at the last step (the run's product is its final weights)."""
    every, last = t.cfg.checkpoint.every, t.step == t.cfg.train.max_steps
    if not (last or (every and t.step % every == 0)):
        return
    started = time.perf_counter()
    finish_pending_save(t)  # one save in flight at a time: its host copy is what the next one reuses
    result = save_checkpoint(
        t.run_dir, t.step, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, loader=t.loader,
        tokens_seen=t.tokens_seen, run_config=t.run_config, keep=t.cfg.checkpoint.keep,
        extra={"health": t.health.state_dict(), **({"scaler": t.scaler.state_dict()} if t.scaler else {})},
        async_save=t.cfg.checkpoint.async_save, async_writer=async_writer(t.cfg, t.device),
        timeout_s=t.cfg.parallel.timeout_s,
    )
    t.pending_save = result if t.cfg.checkpoint.async_save else None
    t.clock.paused += time.perf_counter() - started
    t.monitor.checkpoint_done(time.perf_counter() - started)


def finish_pending_save(t: Trainer) -> None:
    """Wait for the async checkpoint in flight (if any) and mark it complete."""
    if t.pending_save is not None:
        t.pending_save.finish()
        t.pending_save = None


# --- setup ------------------------------------------------------------------------------------------


def async_writer(cfg: RunConfig, device: torch.device) -> str:
    """checkpoint.async_writer resolved: `auto` is a writer process beside a GPU (the training loop keeps the
    GIL to itself and idle cores absorb the write) and a thread on a CPU, where training keeps every core busy
    and a process measured no smaller stall (docs/benchmarks.md) but costs a spawn and shared memory."""
    if cfg.checkpoint.async_writer != "auto":
        return cfg.checkpoint.async_writer
    return "process" if device.type == "cuda" else "thread"


def writer_process(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.checkpoint.async_save and async_writer(cfg, device) == "process"


def setup(cfg: RunConfig) -> Trainer:
    """Check everything that can be wrong before touching the run folder, then build the run."""
    manifest = finetune.prepare_data(cfg)  # data.shards, or data.sft tokenized with the model's tokenizer
    if not cfg.model.pretrained:
        get_preset(cfg.model.preset)  # an unknown name fails here, before the run folder exists
    device = pick_device(cfg)
    group = maybe_init_process_group(device.type, cfg.parallel.timeout_s, alone=writer_process(cfg, device))
    maybe_warn_emulated_bf16(device, cfg.train.precision, enabled=group.rank == 0)  # fp32 is faster there
    try:
        return build_trainer(cfg, manifest, device, group)
    except BaseException:
        group.close()  # a group we created must not outlive a failed setup (in-process callers retry)
        raise


def build_trainer(cfg: RunConfig, manifest: dict[str, Any], device: torch.device, group: ProcessGroup) -> Trainer:
    """The run on this process: layout, loader, run folder, model, optimizer, then resume if there is one."""
    dims = resolve_parallel(cfg, manifest, group.world)
    dp_world = dims.dp if dims else 1
    accum = grad_accum_steps(cfg, dp_world)
    finetune.check_finetune(cfg, device, group.world, accum)
    run_config = resolved_run_config(cfg, manifest, group.world, accum, dims)
    run_dir = Path(cfg.run.dir)
    resume_from = find_resume(cfg, run_dir, run_config)
    verify_shards(cfg.data.shards, manifest, cfg.data.verify, group.rank, group.world)  # data.verify; exit 2 if damaged
    mesh = build_mesh(dims, device.type) if dims else None
    dp_rank = data_rank(mesh, dims)[0] if dims else 0
    loader = finetune.build_loader(cfg, manifest, dp_rank, dp_world) or SampleLoader(
        open_split(cfg.data.shards, "train", manifest), cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed,
        dp_rank, dp_world, curriculum=manifest.get("curriculum") if cfg.data.curriculum else None)
    if group.rank == 0:
        prepare_run_dir(cfg, run_dir, manifest)
    barrier()  # the run folder exists (and is clean) before any rank touches it
    seed_everything(cfg.seed)
    if dims is None:
        model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed,
                            device, quantization=finetune.quantization(cfg, device))  # QLoRA: a 4-bit base
        parallelize(model, None, cfg.train)
        model = finetune.wrap_model(model, cfg)  # LoRA adapters (lora.rank > 0)
        built = None
    else:
        built = build_parallel_model(cfg, manifest["vocab_size"], special_ids(manifest), device, mesh, dims, accum)
        model = built.model
    optimizer = build_optimizer(model, cfg.train)
    if writer_process(cfg, device):  # weights, and AdamW's two moments for the trainable ones, per rank on this node
        check_shared_memory(sum(local_bytes(p) * (3 if p.requires_grad else 1) for p in model.parameters())
                            * int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    ft = None
    if finetune.is_active(cfg, manifest):  # objective, DP-SGD optimizer wrapper, SFT counts
        optimizer, ft = finetune.build_finetune(cfg, manifest, model, optimizer, loader, device)
    monitor = build_run_monitor(cfg.metrics, run_dir, device, enabled=group.rank == 0)
    t = Trainer(
        cfg=cfg, run_dir=run_dir, device=device, model=model, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.train),
        scaler=torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None,
        loader=loader, val_split=open_val_split(cfg, manifest),
        sink=MetricsSink(run_dir / METRICS_FILE, backends=monitor.backends, enabled=group.rank == 0),
        run_config=run_config, accum=accum, monitor=monitor,
        flops_per_token=flops_per_token(model.config, cfg.train.seq_len),
        peak=peak_flops(device, cfg.train.precision),
        group=group, dims=dims, mesh=mesh, finetune=ft, health=build_health_guard(cfg.train),
    )
    if built is not None:
        t.schedule, t.first_stage, t.last_stage = built.schedule, built.first_stage, built.last_stage
    if resume_from is not None:
        resume(t, resume_from)
    return t


def resume(t: Trainer, path: Path) -> None:
    state = load_checkpoint(path, t.model, t.optimizer, t.scheduler, t.loader)
    if t.scaler and "scaler" in state:
        t.scaler.load_state_dict(state["scaler"])
    t.health.load_state_dict(state.get("health"))  # the same skip decisions as an uninterrupted run
    compat.record_resume(t, path, read_run_config(path))  # benign changes: re-applied, printed, RUN/resumes.jsonl
    t.step, t.tokens_seen, t.resumed_from = state["step"], state["tokens_seen"], state["step"]


def rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def resolve_parallel(cfg: RunConfig, manifest: dict[str, Any], world: int) -> ParallelDims | None:
    """The parallel layout (None: one process); a layout that cannot split this model fails here."""
    if world == 1:
        resolve_dims(cfg.parallel, 1)  # fixed degrees > 1 on one process are a mistake worth naming
        return None
    from megalang.model.build import build_llama_config

    model_config = None
    if not cfg.model.pretrained:
        model_config = build_llama_config(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest))
    return resolve_dims(cfg.parallel, world, model_config)


def pick_device(cfg: RunConfig) -> torch.device:
    wanted = cfg.train.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA device (loss scaling); use bf16 or fp32 on CPU")
    return device


def grad_accum_steps(cfg: RunConfig, world: int) -> int:
    """Micro-batches per optimizer step so that each step sees `train.global_batch_tokens`."""
    tc = cfg.train
    per_micro = tc.micro_batch_size * tc.seq_len * world
    gbt = tc.global_batch_tokens or per_micro
    if gbt % per_micro:
        raise UserError(
            f"train.global_batch_tokens={gbt} is not a multiple of train.micro_batch_size × train.seq_len × "
            f"data-parallel ranks = {tc.micro_batch_size} × {tc.seq_len} × {world} = {per_micro}"
        )
    return gbt // per_micro


def resolved_run_config(cfg: RunConfig, manifest: dict[str, Any], world: int, accum: int,
                        dims: ParallelDims | None = None) -> dict[str, Any]:
    """The config saved with every checkpoint, plus the values derived from it and from the data."""
    tc = cfg.train
    dp = dims.dp if dims else world
    return {
        "config": cfg.model_dump(mode="json"),
        "derived": {
            "global_batch_tokens": tc.micro_batch_size * tc.seq_len * dp * accum,
            "world_size": world,
            "parallel": dims.degrees() if dims else None,
            "grad_accum": accum,
            "vocab_size": manifest["vocab_size"],
            "tokenizer_sha256": manifest.get("tokenizer_sha256"),
            "tokenizer_path": manifest.get("tokenizer_path"),
            "shards": str(Path(cfg.data.shards).resolve()),
            "shards_content_sha256": compat.shards_fingerprint(manifest),  # a moved copy of the same tokens resumes
        },
    }


def find_resume(cfg: RunConfig, run_dir: Path, run_config: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (None: start fresh); refuse one this config cannot continue."""
    latest = resume_checkpoint(run_dir, cfg.checkpoint.resume_step)  # newest complete, or exactly resume_step
    if latest is None:
        return None
    if cfg.checkpoint.resume == "never":
        raise UserError(
            f"{run_dir} already has checkpoints but checkpoint.resume=never; choose another run.dir or remove it"
        )
    compat.check_resume_compatible(latest, read_run_config(latest), run_config)  # refused keys, named
    return latest


def open_val_split(cfg: RunConfig, manifest: dict[str, Any]) -> TokenSplit | None:
    """The val split, or None (val loss skipped) when the shards hold no window of it."""
    if finetune.is_sft(manifest):
        return finetune.open_val(cfg, manifest)  # SFT: rows and assistant-only labels as in training
    if not manifest["splits"].get("val", {}).get("files"):
        return None
    split = open_split(cfg.data.shards, "val", manifest)
    return split if num_windows(split, cfg.train.seq_len) else None


def seed_everything(seed: int) -> None:
    """Init and data order use their own generators; this seeds dropout and any third-party randomness."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# --- the run folder ---------------------------------------------------------------------------------


def prepare_run_dir(cfg: RunConfig, run_dir: Path, manifest: dict[str, Any]) -> None:
    """Create or reopen the run folder: config, tokenizer copy; drop what marks it finished."""
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(run_dir)
    # An unfinished run must not look like a complete artifact: manifest.json and summary.json come last.
    for name in (MANIFEST, SUMMARY):
        (run_dir / name).unlink(missing_ok=True)
    # JSON is valid YAML, and this keeps to the one atomic-write helper; `megalang train config.yaml` re-runs it.
    write_json_atomic(run_dir / CONFIG_FILE, cfg.model_dump(mode="json"))
    copy_tokenizer(manifest, run_dir / TOKENIZER_DIR)


def copy_tokenizer(manifest: dict[str, Any], dest: Path) -> None:
    """Copy the shards' tokenizer folder into the run, so export and generate need nothing outside it."""
    source = Path(manifest.get("tokenizer_path") or "")
    if not manifest.get("tokenizer_path") or not source.is_dir():
        raise UserError(
            f"data.shards: the tokenizer folder '{source}' named in its manifest is missing; restore it or "
            "re-run `megalang data tokenize`"
        )
    if (dest / MANIFEST).is_file() and (source / MANIFEST).is_file() and \
            sha256_file(dest / MANIFEST) == sha256_file(source / MANIFEST):
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


def finish(t: Trainer, wall_seconds: float) -> dict[str, Any]:
    """summary.json, then manifest.json (the last file: it hashes everything else)."""
    finish_pending_save(t)
    barrier()  # every rank's last checkpoint shards are on disk before rank 0 hashes the folder
    summary = build_summary(t, wall_seconds)
    if t.group.rank != 0:
        return summary
    write_json_atomic(t.run_dir / SUMMARY, summary)
    clear_report(t.run_dir)  # an earlier leg's report must not be hashed into the manifest, then rewritten
    write_manifest(
        t.run_dir, "train", t.cfg.model_dump(mode="json"),
        inputs=[describe_input(t.cfg.data.shards), describe_input(t.run_config["derived"]["tokenizer_path"])],
        counts={"steps": t.step, "tokens_seen": t.tokens_seen, "params": summary["total_params"],
                "checkpoints": len(complete_checkpoints(t.run_dir))},
        known_files=recorded_files(t.run_dir),  # checkpoints were hashed when saved: not read back here
    )
    maybe_write_report(t.cfg.metrics, t.run_dir)  # after the manifest: a view on the run, not part of it
    return summary


def count_params(t: Trainer, trainable: bool = False) -> int:
    """Whole-model parameter count (DTensor numel is already global; pipeline stages add theirs up)."""
    n = sum(p.numel() for p in t.model.parameters() if p.requires_grad or not trainable)
    if t.schedule is None:
        return n
    total = torch.tensor([n], dtype=torch.int64)
    torch.distributed.all_reduce(total, group=t.mesh["pp"].get_group())
    return int(total.item())


def build_summary(t: Trainer, wall_seconds: float) -> dict[str, Any]:
    """From metrics.jsonl, so a resumed run reports the whole run, not only its last leg."""
    records = read_metrics(t.run_dir / METRICS_FILE)
    losses = [r["loss"] for s, r in records.items() if s <= t.step and r.get("loss") is not None]
    vals = [r["val_loss"] for s, r in records.items() if s <= t.step and r.get("val_loss") is not None]
    rate = t.clock.steady_rate()
    if rate is None:  # nothing trained in this call (already complete): the logged rates
        logged = [r["tokens_per_s"] for r in records.values() if r.get("tokens_per_s")]
        rate = sum(logged) / len(logged) if logged else None
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "val_loss": vals[-1] if vals else None,
        "tokens_seen": t.tokens_seen,
        "steps": t.step,
        "trainable_params": count_params(t, trainable=True),
        "total_params": count_params(t),
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_s": rate,
        "mfu": mfu(rate, t.flops_per_token, t.peak) if rate else None,
        "peak_flops": t.peak,
        "flops_per_token": t.flops_per_token,
        "precision": t.cfg.train.precision,
        "device": str(t.device),
        "resumed_from_step": t.resumed_from,
        "run_dir": str(t.run_dir.resolve()),
        **t.health.summary(),  # skipped_steps, spike_skipped_steps, skipped_at
        **(t.finetune.summary() if t.finetune is not None else {}),  # trainable fraction, SFT counts, DP epsilon
    }
