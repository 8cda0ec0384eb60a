"""Checkpoint saving: synchronous vs asynchronous (DCP async_save), and how long each stalls training.

A sync save blocks the training loop for the whole write. An async save copies the state to host memory
and returns; the files are written and hashed by a background thread while the next forward/backward runs
(on a GPU the copy also runs in the background, and the trainer waits for it only before the optimizer step).
The stall of an async save is (save call + forward/backward + wait for the copy) minus a forward/backward
alone, so it includes whatever the background write takes away from the step; the figure that matters is
that stall as a fraction of the sync save's time (target < 20 %).
Model: a preset (default `tiny` with a 32k vocabulary, 19.5 M parameters) after one optimizer step, so the AdamW moments exist
and the checkpoint is the real size (weights + 2 moments, fp32). Each mode is timed `--repeats` times,
alternating, and the median is reported. Prints one JSON line.

Usage: python bench/checkpoint.py [--preset tiny] [--micro-batch 8] [--repeats 3]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    from megalang.config import ModelConfig, TrainSection
    from megalang.model.build import build_model
    from megalang.train.checkpoint import save_checkpoint
    from megalang.train.optim import build_optimizer, build_scheduler

    class Loader:  # the loader state a checkpoint records; no data is needed to time a save
        def state_dict(self):
            return {"consumed": 0, "epoch": 0, "num_samples": 1, "seq_len": 8, "seed": 0}

    train_cfg = TrainSection(max_steps=10, warmup_steps=1)
    model = build_model(ModelConfig(preset=args.preset), 32_000, 64, {}, 0)
    optimizer = build_optimizer(model, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    ids = torch.randint(0, 32_000, (args.micro_batch, 257))

    def forward_backward() -> None:
        F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten()).backward()

    forward_backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    fb = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        forward_backward()
        fb.append(time.perf_counter() - started)
    optimizer.zero_grad(set_to_none=True)
    state_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) * 3

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        common = dict(model=model, optimizer=optimizer, scheduler=scheduler, loader=Loader(), tokens_seen=0,
                      run_config={}, keep=1)
        sync, stall, total = [], [], []
        step = 0
        for _ in range(args.repeats):
            step += 1
            started = time.perf_counter()
            save_checkpoint(tmp, step, **common)
            sync.append(time.perf_counter() - started)

            step += 1
            started = time.perf_counter()
            pending = save_checkpoint(tmp, step, async_save=True, **common)
            forward_backward()  # the work a training step does while the state is being copied
            pending.wait_staged()  # what the trainer does before the optimizer step
            stall.append(time.perf_counter() - started - statistics.median(fb))
            pending.finish()
            total.append(time.perf_counter() - started)
            optimizer.zero_grad(set_to_none=True)
        on_disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())

    sync_s, stall_s, total_s = (statistics.median(v) for v in (sync, stall, total))
    print(json.dumps({
        "bench": "checkpoint", "preset": args.preset, "params": sum(p.numel() for p in model.parameters()),
        "state_bytes": state_bytes, "bytes_on_disk": on_disk,
        "sync_seconds": round(sync_s, 3), "async_stall_seconds": round(stall_s, 3),
        "async_total_seconds": round(total_s, 3), "forward_backward_seconds": round(statistics.median(fb), 3), "sync_gb_per_s": round(state_bytes / sync_s / 1e9, 3),
        "stall_fraction_of_sync": round(stall_s / sync_s, 4),
        "sync_runs": [round(v, 3) for v in sync], "async_stall_runs": [round(v, 3) for v in stall],
    }))


if __name__ == "__main__":
    main()
