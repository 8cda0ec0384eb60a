"""What the training-throughput benches (train_throughput.py, gpu_train.py) share: the contenders' common
starting point, HF Trainer's loop, one steady-state rule for every contender and the held-out loss that checks
equal work. Imported by the bench scripts, which run with bench/ first on sys.path.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from _cuda import synchronize

# Steps left out of every contender's steady state (allocation, caches, compilation): megalang's trainer logs
# every WARMUP steps, so its first WARMUP steps are whole log intervals that can be dropped like the peers' stamps.
WARMUP = 5
# Largest relative spread of the contenders' held-out losses that still counts as the same work, per precision
# (docs/benchmarks.md states the same numbers). Measured on the `tiny` preset, 30 steps: fp32 1.2e-7 (summation
# order only), bf16 2.15e-4 (the bf16 rounding of the chunked head's gradient).
LOSS_TOLERANCE = {"fp32": 1e-5, "bf16": 3e-4}


def fresh(cfg, device: str = "cpu"):
    """Initial model, optimizer, schedule and loader exactly as megalang's trainer builds them."""
    from megalang.data.loader import SampleLoader
    from megalang.data.shards import open_split, read_shard_manifest
    from megalang.model.build import build_model, special_ids
    from megalang.train.optim import build_optimizer, build_scheduler

    manifest = read_shard_manifest(cfg.data.shards)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed, device)
    model.train()
    optimizer = build_optimizer(model, cfg.optimizer)
    loader = SampleLoader(open_split(cfg.data.shards, "train", manifest), cfg.train.seq_len,
                          cfg.train.micro_batch_size, cfg.seed)
    return model, optimizer, build_scheduler(optimizer, cfg), loader, manifest


def steady_rate(stamps: list[float], tokens_per_step: int) -> float:
    """Tokens/s after the first WARMUP steps; stamps[0] is the start of step 1, stamps[k] the end of step k."""
    return (len(stamps) - 1 - WARMUP) * tokens_per_step / (stamps[-1] - stamps[WARMUP])


def megalang_steady_rate(run_dir: str | Path, tokens_per_step: int) -> float:
    """megalang's tokens/s over the same steps as `steady_rate`, from the intervals its trainer logged
    (train.log_every = WARMUP; each interval's clock is read after a device sync, eval and saving excluded)."""
    from megalang.monitor.metrics import read_metrics

    tokens = seconds = 0.0
    previous = 0
    for step, record in read_metrics(Path(run_dir) / "metrics.jsonl").items():
        if record.get("tokens_per_s") and previous >= WARMUP:
            tokens += (step - previous) * tokens_per_step
            seconds += (step - previous) * tokens_per_step / record["tokens_per_s"]
        if record.get("tokens_per_s"):
            previous = step
    return tokens / seconds


@torch.no_grad()
def held_out_loss(model, cfg, manifest, device: str = "cpu", batch: int = 16, batches: int = 4) -> float:
    """Mean loss of a trained model on the first `batches` val micro-batches: the same for every contender."""
    from megalang.data.loader import eval_batches
    from megalang.data.shards import open_split

    model.eval()
    losses = []
    for input_ids, labels in eval_batches(open_split(cfg.data.shards, "val", manifest), cfg.train.seq_len, batch, batches):
        logits = model(input_ids=input_ids.to(device)).logits
        losses.append(torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.to(device).flatten()).item())
    return sum(losses) / len(losses)


def losses_agree(losses: dict[str, float], precision: str) -> dict:
    """The held-out losses, their largest relative spread and whether it is within LOSS_TOLERANCE."""
    spread = (max(losses.values()) - min(losses.values())) / math.fabs(min(losses.values()))
    return {"held_out_loss": {name: round(loss, 4) for name, loss in losses.items()},
            "held_out_loss_spread": float(f"{spread:.3g}"), "held_out_loss_tolerance": LOSS_TOLERANCE[precision],
            "losses_agree": spread <= LOSS_TOLERANCE[precision]}


def run_hf_trainer(cfg, out: Path, device: str = "cpu", compile: bool = False) -> dict:
    """HF Trainer on megalang's initial weights, batches, optimizer and schedule: its steady tokens/s and its
    trained model."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model, optimizer, scheduler, loader, manifest = fresh(cfg, device)
    steps = cfg.train.max_steps

    class Batches(torch.utils.data.IterableDataset):
        """The same micro-batches in the same order; `shift_labels` hands HF's loss the already-shifted
        targets, so it scores exactly the tokens the other loops score."""

        def __iter__(self):  # by position, not by advancing the loader: a re-created iterator starts over
            for step in range(steps):
                input_ids, labels = loader.batch_at(step * loader.micro_batch)
                labels = labels.contiguous()
                yield {"input_ids": input_ids, "labels": labels, "shift_labels": labels}

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if not stamps:
                synchronize(device)
                stamps.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            synchronize(device)
            stamps.append(time.perf_counter())

    args = TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=1, max_grad_norm=1.0,
        bf16=cfg.train.precision == "bf16", use_cpu=device == "cpu", save_strategy="no",
        logging_steps=WARMUP,  # as often as megalang's trainer logs: each log reads the loss back from the device
        report_to=[], dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed,
        remove_unused_columns=False,  # keep `shift_labels`: otherwise HF shifts the already-shifted labels again
        torch_compile=compile,
        # only when asked: newer transformers warns on the key itself (renamed activation_checkpointing)
        **({"gradient_checkpointing": True} if cfg.train.activation_checkpointing else {}),
    )
    Trainer(model=model, args=args, train_dataset=Batches(), data_collator=lambda items: items[0],
            optimizers=(optimizer, scheduler), callbacks=[Clock()]).train()
    tokens = cfg.train.micro_batch_size * cfg.train.seq_len
    return {"tokens_per_s": steady_rate(stamps, tokens), "model": model, "manifest": manifest}
