"""Data loading: the loader's time per micro-batch as a fraction of a training step, and shard read speed.

The loader (`SampleLoader`) reads shuffled windows straight from the memory-mapped shards. Its time per
micro-batch is compared with one optimizer step of the `tiny` preset on the same micro-batch shape (the
demo's), timed through megalang's own trainer. Shard read speed is a sequential pass over the memmap
(page-cache warm: the second pass) and a shuffled-window pass as the loader does it.
Prints one JSON line.

Usage: python bench/data_loader.py [--tokens 100000000] [--batches 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _synthetic import synthetic_shards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100_000_000)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=16)
    args = parser.parse_args()

    from megalang.config import RunConfig
    from megalang.data.loader import SampleLoader
    from megalang.data.shards import open_split, read_shard_manifest
    from megalang.train.trainer import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = synthetic_shards(root, args.tokens, 8192)
        manifest = read_shard_manifest(shards)
        split = open_split(shards, "train", manifest)

        # Sequential read of every shard file, twice; the second pass is from the page cache.
        files = sorted(shards.glob("train-*.bin"))
        nbytes = sum(f.stat().st_size for f in files)
        seq_seconds = []
        for _ in range(2):
            started = time.perf_counter()
            checksum = 0
            for f in files:
                checksum += int(np.memmap(f, dtype=np.uint16, mode="r").sum(dtype=np.uint64) & 0xFF)
            seq_seconds.append(time.perf_counter() - started)

        loader = SampleLoader(split, args.seq_len, args.micro_batch, seed=0)
        next(loader)  # the epoch permutation is built on first use
        started = time.perf_counter()
        for _ in range(args.batches):
            input_ids, labels = next(loader)
        loader_seconds = (time.perf_counter() - started) / args.batches
        window_bytes = args.micro_batch * (args.seq_len + 1) * 2

        step_seconds = {}
        for precision in ("fp32", "bf16"):
            cfg = RunConfig.model_validate({
                "model": {"preset": "tiny"}, "data": {"shards": str(shards)},
                "train": {"max_steps": 25, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch,
                          "precision": precision, "log_every": 5, "eval_every": 0, "eval_batches": 1,
                          "warmup_steps": 5},
                "checkpoint": {"every": 0}, "run": {"dir": str(root / f"run-{precision}")},
            })
            summary = train(cfg)
            step_seconds[precision] = args.micro_batch * args.seq_len / summary["tokens_per_s"]

    print(json.dumps({
        "bench": "data_loader", "train_tokens": args.tokens, "shard_bytes": nbytes,
        "sequential_read_gb_per_s": {"first_pass": round(nbytes / seq_seconds[0] / 1e9, 2),
                                     "cached": round(nbytes / seq_seconds[1] / 1e9, 2)},
        "loader_ms_per_micro_batch": round(loader_seconds * 1e3, 4),
        "loader_random_window_gb_per_s": round(window_bytes / loader_seconds / 1e9, 3),
        "step_ms": {k: round(v * 1e3, 1) for k, v in step_seconds.items()},
        "loader_fraction_of_step": {k: round(loader_seconds / v, 5) for k, v in step_seconds.items()},
    }))


if __name__ == "__main__":
    main()
