"""Training throughput: megalang vs HF Trainer vs a bare PyTorch loop, same model, data, batch and optimizer.

All three start from the same initial weights (megalang's preset built from the same seed), read the same
micro-batches in the same order (megalang's SampleLoader over real shards of the Python standard library),
and step the same AdamW (β 0.9/0.95, ε 1e-8, decay on matrices) with the same warmup + cosine schedule and
grad clip 1.0. Tokens/s is the steady state: the first `WARMUP` steps (allocation, caches) are excluded for
all three (megalang's from the intervals its trainer logs). Equal work is checked by the loss of each trained
model on the same held-out batches, within `LOSS_TOLERANCE` (bench/_train_compare.py).

With `--repeats N` the three run in turn N times (megalang, bare, HF, megalang, ...) and each one's median
tokens/s is reported, so a slow spell of a shared machine does not land on one contender only.
`--no-fused-loss` trains megalang with `loss.fused=false` (the logits + cross-entropy path the peers use),
to measure what the chunked loss contributes; `--compile` trains megalang with `train.compile=true` (compile
time falls in the first log interval, which the steady state leaves out).

Usage: python bench/train_throughput.py [--steps 30] [--repeats 1] [--preset tiny] [--precisions fp32,bf16]
                                        [--no-fused-loss] [--compile]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F
from _train_compare import (
    WARMUP,
    fresh,
    held_out_loss,
    losses_agree,
    megalang_steady_rate,
    run_hf_trainer,
    steady_rate,
)


def build_shards(root: Path) -> Path:
    """Real token shards: the standard library's source, as `megalang demo` prepares it."""
    from megalang.config import PrepareConfig, TokenizeConfig, TokenizerTrainConfig
    from megalang.data.pipeline import prepare
    from megalang.data.tokenize import tokenize
    from megalang.data.tokenizer import train_tokenizer
    from megalang.demo import EXCLUDE, VAL_MODULES, stdlib_dir

    data, tok, shards = root / "data", root / "tok", root / "shards"
    prepare(PrepareConfig(inputs=[str(stdlib_dir())], out=str(data), exclude=EXCLUDE))
    train_tokenizer(TokenizerTrainConfig(input=str(data), out=str(tok), vocab_size=8192))
    tokenize(TokenizeConfig(input=str(data), tokenizer=str(tok), out=str(shards), val_fraction=0, val_sources=VAL_MODULES))
    return shards


def run_config(shards: Path, run_dir: Path, preset: str, precision: str, steps: int, fused_loss: bool = True,
               compile: bool = False):
    from megalang.config import RunConfig

    return RunConfig.model_validate({
        "model": {"preset": preset},
        "data": {"shards": str(shards)},
        "train": {"max_steps": steps, "seq_len": 256, "micro_batch_size": 16, "precision": precision,
                  "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 10, "log_every": WARMUP, "eval_every": 0,
                  "eval_batches": 1, "fused_loss": fused_loss, "compile": compile},
        "checkpoint": {"every": 0},
        "run": {"dir": str(run_dir)},
        "seed": 1234,
    })


def autocast(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def run_megalang(cfg) -> dict:
    from megalang.data.shards import read_shard_manifest
    from megalang.model.load import load_trained_model
    from megalang.train.trainer import train

    summary = train(cfg)
    model, _ = load_trained_model(cfg.run.dir)
    rate = megalang_steady_rate(cfg.run.dir, cfg.train.micro_batch_size * cfg.train.seq_len)
    return {"tokens_per_s": rate, "mfu": rate * summary["flops_per_token"] / summary["peak_flops"],
            "held_out_loss": held_out_loss(model, cfg, read_shard_manifest(cfg.data.shards))}


def run_bare_loop(cfg) -> dict:
    model, optimizer, scheduler, loader, manifest = fresh(cfg)
    stamps = [time.perf_counter()]
    for _ in range(cfg.train.max_steps):
        input_ids, labels = next(loader)
        with autocast(cfg.train.precision):
            logits = model(input_ids=input_ids).logits
        F.cross_entropy(logits.float().flatten(0, 1), labels.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    tokens = cfg.train.micro_batch_size * cfg.train.seq_len
    return {"tokens_per_s": steady_rate(stamps, tokens), "held_out_loss": held_out_loss(model, cfg, manifest)}


def run_hf(cfg, out: Path) -> dict:
    hf = run_hf_trainer(cfg, out)
    return {"tokens_per_s": hf["tokens_per_s"], "held_out_loss": held_out_loss(hf["model"], cfg, hf["manifest"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--no-fused-loss", action="store_true")
    parser.add_argument("--compile", action="store_true", help="megalang with train.compile=true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    from megalang.monitor.flops import measure_cpu_peak_flops

    result: dict = {"bench": "train_throughput", "preset": args.preset, "steps": args.steps, "seq_len": 256,
                    "micro_batch": 16, "repeats": args.repeats, "fused_loss": not args.no_fused_loss, "compile": args.compile,
                    "machine": f"{platform.machine()} {os.cpu_count()} cpus", "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = build_shards(root)
        for precision in args.precisions.split(","):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float32
            runs: dict[str, list[dict]] = {"megalang": [], "bare_loop": [], "hf_trainer": []}
            for repeat in range(args.repeats):
                cfg = run_config(shards, root / f"run-{precision}-{repeat}", args.preset, precision, args.steps,
                                 fused_loss=not args.no_fused_loss, compile=args.compile)
                runs["megalang"].append(run_megalang(cfg))
                runs["bare_loop"].append(run_bare_loop(cfg))
                runs["hf_trainer"].append(run_hf(cfg, root / f"hf-{precision}-{repeat}"))
            rate = {name: median([r["tokens_per_s"] for r in rs]) for name, rs in runs.items()}
            losses = {name: rs[0]["held_out_loss"] for name, rs in runs.items()}
            result[precision] = {
                "megalang_tokens_per_s": round(rate["megalang"], 1),
                "hf_trainer_tokens_per_s": round(rate["hf_trainer"], 1),
                "bare_loop_tokens_per_s": round(rate["bare_loop"], 1),
                "ratio_vs_hf_trainer": round(rate["megalang"] / rate["hf_trainer"], 3),
                "ratio_vs_bare_loop": round(rate["megalang"] / rate["bare_loop"], 3),
                "runs_tokens_per_s": {name: [round(r["tokens_per_s"]) for r in rs] for name, rs in runs.items()},
                "megalang_mfu": round(median([r["mfu"] for r in runs["megalang"]]), 4) if runs["megalang"][0]["mfu"] else None,
                "matmul_peak_flops": measure_cpu_peak_flops(dtype),
                **losses_agree(losses, precision),
            }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
