"""Checkpoint saving: synchronous vs asynchronous (DCP async_save, writer process and writer thread), and how
much training time each costs.

A sync save blocks the training loop for the whole write. An async save copies the state to host memory
and returns; the files are written and hashed in the background while training continues (on a GPU the copy
also runs in the background, and the trainer waits for it only before the optimizer step).

The stall of an async save is measured over a window: the save call, `--window` training steps
(forward, backward, optimizer step), and then waiting for the write to finish, minus the same steps without
a save in the same repeat. Waiting at the end charges the window with every cycle the write took from
training, including work a low-priority writer put off past the last step. The figure that matters is that
stall as a fraction of the sync save's time (target < 20 %).

Model: a preset (default `tiny` with a 32k vocabulary, 19.5 M parameters) after one optimizer step, so the
AdamW moments exist and the checkpoint is the real size (weights + 2 moments, fp32). Each repeat runs the
plain window, a sync save, and a window per async writer, the order of the async writers alternating; the
median over repeats is reported. The first save of each writer (spawning the writer process, allocating
the host buffers) is reported separately and left out of the medians. Prints one JSON line.

Usage: python bench/checkpoint.py [--preset tiny] [--micro-batch 8] [--window 3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

WRITERS = ("process", "thread")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=3, help="training steps timed after each save")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for training (default: torch's, every core); fewer leaves cores "
                        "idle for the writer, as beside a GPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from megalang.config import ModelConfig, RunConfig
    from megalang.model.build import build_model
    from megalang.parallel.distributed import maybe_init_process_group
    from megalang.train.checkpoint import Checkpointer
    from megalang.train.optim import build_optimizer, build_scheduler

    class Loader:  # the loader state a checkpoint records; no data is needed to time a save
        def state_dict(self):
            return {"consumed": 0, "epoch": 0, "num_samples": 1, "seq_len": 8, "seed": 0}

    group = maybe_init_process_group("cpu", alone=True)  # what the trainer does for a writer process
    run_cfg = RunConfig.model_validate({"train": {"max_steps": 10_000}, "schedule": {"warmup_steps": 1}})
    model = build_model(ModelConfig(preset=args.preset), 32_000, 64, {}, 0)
    optimizer = build_optimizer(model, run_cfg.optimizer)
    scheduler = build_scheduler(optimizer, run_cfg)
    ids = torch.randint(0, 32_000, (args.micro_batch, 257))

    def train_step(pending=None) -> None:
        F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        if pending is not None:
            pending.wait_staged()  # what the trainer does before the optimizer step
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def window(pending=None) -> float:
        started = time.perf_counter()
        for _ in range(args.window):
            train_step(pending)
        if pending is not None:
            pending.finish()
        return time.perf_counter() - started

    train_step()
    state_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) * 3
    sync, plain = [], []
    stall: dict[str, list[float]] = {w: [] for w in WRITERS}
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        common = dict(model=model, optimizer=optimizer, scheduler=scheduler, loader=Loader(), tokens_seen=0,
                      run_config={})
        sync_writer = Checkpointer(tmp, keep=1)
        async_writers = {w: Checkpointer(tmp, keep=1, async_save=True, async_writer=w) for w in WRITERS}
        step = 0
        for repeat in range(args.repeats + 1):
            base = window()
            step += 1
            started = time.perf_counter()
            sync_writer.save(step, **common)
            elapsed = time.perf_counter() - started
            if repeat:
                sync.append(elapsed)
                plain.append(base)
            for writer in WRITERS if repeat % 2 else WRITERS[::-1]:
                step += 1
                started = time.perf_counter()
                pending = async_writers[writer].save(step, **common)
                window(pending)
                cost = time.perf_counter() - started - base
                if repeat:
                    stall[writer].append(cost)
                else:
                    first[writer] = cost
        on_disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    for checkpointer in (sync_writer, *async_writers.values()):
        checkpointer.close()
    group.close()

    sync_s = statistics.median(sync)
    result = {
        "bench": "checkpoint", "preset": args.preset, "params": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_bytes, "bytes_on_disk": on_disk, "training_threads": torch.get_num_threads(),
        "window_steps": args.window,
        "window_seconds": round(statistics.median(plain), 3),
        "sync_seconds": round(sync_s, 3), "sync_gb_per_s": round(state_bytes / sync_s / 1e9, 3),
    }
    for writer in WRITERS:
        stall_s = statistics.median(stall[writer])
        result[f"{writer}_stall_seconds"] = round(stall_s, 3)
        result[f"{writer}_stall_fraction_of_sync"] = round(stall_s / sync_s, 4)
        result[f"{writer}_first_save_stall_seconds"] = round(first[writer], 3)
        result[f"{writer}_stall_runs"] = [round(v, 3) for v in stall[writer]]
    result["sync_runs"] = [round(v, 3) for v in sync]
    result["window_runs"] = [round(v, 3) for v in plain]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
