"""What checkpoint integrity costs: a megalang save (fsync, SHA-256 of every file, COMPLETE.json, rename)
against DCP's plain save of the same state, and verifying a checkpoint against DCP's plain load of it.

The peer is `dcp.save` / `dcp.load` alone, as torchtitan uses them: no record of what was written, nothing
checked at load. `hash_seconds` is what hashing the finished folder from scratch costs (what rank 0 alone
re-reading the checkpoint would add to every save); megalang instead hashes each file in the rank that wrote
it, right after writing it. Model: a preset (default `tiny`, 32k vocabulary) after one optimizer step, so the
AdamW moments exist. Each figure is the median of `--repeats`. Prints one JSON line.

Usage: python bench/checkpoint_integrity.py [--preset tiny] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="torch.distributed is disabled")

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from megalang.config import ModelConfig, RunConfig
    from megalang.model.build import build_model
    from megalang.store.checkpoints import describe_checkpoint_files
    from megalang.store.run_dir import RunDir
    from megalang.train import checkpoint as ckpt
    from megalang.train.optim import build_optimizer, build_scheduler

    class Loader:  # the loader state a checkpoint records; no data is needed to time a save
        def state_dict(self):
            return {"consumed": 0}

    run_cfg = RunConfig.model_validate({"train": {"max_steps": 10}, "schedule": {"warmup_steps": 1}})
    model = build_model(ModelConfig(preset=args.preset), 32_000, 64, {}, 0)
    optimizer = build_optimizer(model, run_cfg.optimizer)
    ids = torch.randint(0, 32_000, (4, 65))
    F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    optimizer.step()
    common = dict(model=model, optimizer=optimizer, scheduler=build_scheduler(optimizer, run_cfg), loader=Loader(),
                  tokens_seen=0, run_config={})

    def state():
        model_sd, optim_sd = get_state_dict(model, optimizer)
        return {"model": model_sd, "optim": optim_sd}

    figures: dict[str, list[float]] = {k: [] for k in ("dcp_save", "megalang_save", "hash", "dcp_load", "verify")}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for i in range(args.repeats):
            plain = Path(tmp) / f"plain-{i}"
            figures["dcp_save"].append(timed(lambda: dcp.save(state(), checkpoint_id=plain)))
            figures["megalang_save"].append(timed(lambda: ckpt.save_checkpoint(tmp, i + 1, keep=1, **common)))
            path = RunDir(Path(tmp)).step(i + 1)
            figures["hash"].append(timed(lambda: describe_checkpoint_files(path)))
            figures["dcp_load"].append(timed(lambda: dcp.load(state(), checkpoint_id=plain)))
            figures["verify"].append(timed(lambda: ckpt.verify_checkpoint(path)))  # a fresh record each call
        on_disk = sum(f.stat().st_size for f in path.iterdir())
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(json.dumps({
        "bench": "checkpoint_integrity", "preset": args.preset, "bytes_on_disk": on_disk,
        **{f"{k}_seconds": round(v, 3) for k, v in med.items()},
        "save_overhead_vs_dcp": round(med["megalang_save"] / med["dcp_save"] - 1, 3),
        "verify_fraction_of_load": round(med["verify"] / med["dcp_load"], 3),
        "sha256_mb_per_s": round(on_disk / med["hash"] / 1e6, 1),
    }))


if __name__ == "__main__":
    main()
