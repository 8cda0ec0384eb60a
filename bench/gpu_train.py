"""One GPU: a ~1B Llama at sequence length 2048 in bf16, megalang vs HF Trainer, tokens/s and MFU.

A prepared script for a GPU machine that finishes in under 10 minutes (H100/H200: about 5 with one repeat). Both
runs start from the same initial weights and read the same micro-batches (synthetic tokens: throughput does not
depend on what the tokens say). megalang runs its trainer with bf16 autocast, fused AdamW, the chunked
linear + cross-entropy loss (loss.fused; --no-fused-loss for the plain one), per-block
torch.compile and (optionally) activation checkpointing; HF Trainer runs with bf16=True, its own
torch_compile and gradient checkpointing settings matched. Both clocks are read after a device sync, the first
`WARMUP` steps are left out of both steady states, and with `--repeats N` the two run in turn N times
(megalang, HF, megalang, HF, ...) and each one's median is reported. Equal work is checked as in
bench/train_throughput.py: both trained models are scored on the same held-out batches. MFU is against the
GPU's dense bf16 datasheet peak (989 TFLOP/s for H100 SXM and H200), with the PaLM FLOPs count (6·N + attention).
Prints one JSON line.

Usage: python bench/gpu_train.py [--preset 1b] [--seq-len 2048] [--micro-batch 4] [--steps 30] [--repeats 1]
                                 [--no-compile] [--ac] [--no-fused-loss]
On a machine without CUDA it prints a `skipped` line and exits 0, unless --allow-cpu (a smoke test of the same
code paths with a small preset: --preset debug --seq-len 64 --micro-batch 2 --steps 8 --no-compile).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
from pathlib import Path
from statistics import median

import torch
from _cuda import skip_without_cuda
from _synthetic import synthetic_shards
from _train_compare import (
    WARMUP,
    held_out_loss,
    losses_agree,
    megalang_steady_rate,
    run_hf_trainer,
)

HELD_OUT_BATCHES = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ac", action="store_true", help="activation checkpointing (both frameworks)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--no-fused-loss", action="store_true", help="megalang with the plain logits + cross-entropy loss")
    args = parser.parse_args()
    if not args.allow_cpu:
        skip_without_cuda("gpu_train")
    if args.steps <= WARMUP:
        parser.error(f"--steps must exceed the {WARMUP} warm-up steps left out of the steady state")
    cuda = torch.cuda.is_available()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    torch.backends.cuda.matmul.allow_tf32 = True

    from megalang.model.presets import get_preset
    from megalang.monitor.flops import flops_per_token, peak_flops

    device = "cuda" if cuda else "cpu"
    vocab = get_preset(args.preset)["vocab_size"]
    tokens_per_step = args.micro_batch * args.seq_len
    result: dict = {"bench": "gpu_train", "device": torch.cuda.get_device_name() if cuda else "cpu",
                    "preset": args.preset, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                    "steps": args.steps, "repeats": args.repeats, "warmup_steps": WARMUP,
                    "compile": not args.no_compile, "activation_checkpointing": args.ac,
                    "fused_loss": not args.no_fused_loss, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = synthetic_shards(root, tokens_per_step * (args.steps + 2) + 200_000, vocab, 200_000, 100_000)
        runs: dict[str, list[dict]] = {"megalang": [], **({} if args.skip_hf else {"hf_trainer": []})}
        for repeat in range(args.repeats):  # alternated, so a slow spell does not land on one contender only
            cfg = run_config(args, shards, root / f"run-{repeat}", device)
            runs["megalang"].append(run_megalang(cfg, device))
            if not args.skip_hf:
                runs["hf_trainer"].append(run_hf(cfg, root / f"hf-{repeat}", device, compile=not args.no_compile))
        rates = {name: median(r["tokens_per_s"] for r in rs) for name, rs in runs.items()}
        fpt = flops_per_token(runs["megalang"][0]["config"], args.seq_len)
        peak = peak_flops(device, "bf16")
        for name, rs in runs.items():
            result[f"{name}_tokens_per_s"] = round(rates[name], 1)
            result[f"{name}_runs_tokens_per_s"] = [round(r["tokens_per_s"], 1) for r in rs]
            result[f"{name}_mfu"] = round(rates[name] * fpt / peak, 4) if peak else None
            if cuda:
                result[f"{name}_peak_memory_gb"] = max(r["peak_memory_gb"] for r in rs)
        if not args.skip_hf:
            result["ratio_vs_hf_trainer"] = round(rates["megalang"] / rates["hf_trainer"], 3)
            result.update(losses_agree({name: rs[0]["held_out_loss"] for name, rs in runs.items()}, "bf16"))
    print(json.dumps(result))


def run_config(args, shards: Path, run_dir: Path, device: str):
    from megalang.config import RunConfig

    return RunConfig.model_validate({
        "model": {"preset": args.preset}, "data": {"shards": str(shards)},
        "train": {"max_steps": args.steps, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch,
                  "precision": "bf16", "compile": not args.no_compile, "activation_checkpointing": args.ac,
                  "log_every": WARMUP, "eval_every": 0, "eval_batches": 1, "device": device, "progress": False},
        "optimizer": {"lr": 3e-4}, "schedule": {"min_lr": 3e-5, "warmup_steps": 5},
        "loss": {"fused": not args.no_fused_loss},
        "checkpoint": {"every": 0}, "metrics": {"report": False}, "run": {"dir": str(run_dir)}, "seed": 0,
    })


def start_measuring(device: str) -> None:
    gc.collect()  # the previous contender's model and optimizer state go before this one's peak is measured
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 1e9, 2) if device == "cuda" else None


def run_megalang(cfg, device: str) -> dict:
    from megalang.data.shards import read_shard_manifest
    from megalang.model.load import load_trained_model
    from megalang.train.trainer import train

    start_measuring(device)
    train(cfg)
    peak = peak_memory_gb(device)  # before the held-out evaluation adds its own
    rate = megalang_steady_rate(cfg.run.dir, cfg.train.micro_batch_size * cfg.train.seq_len)
    model, _ = load_trained_model(cfg.run.dir)  # the final checkpoint: what the trainer produced
    model.to(device)
    loss = held_out_loss(model, cfg, read_shard_manifest(cfg.data.shards), device, cfg.train.micro_batch_size,
                         HELD_OUT_BATCHES)
    shutil.rmtree(cfg.run.dir)  # a 1B checkpoint with its AdamW state is ~13 GB; repeats would fill the disk
    return {"tokens_per_s": rate, "peak_memory_gb": peak, "held_out_loss": loss, "config": model.config}


def run_hf(cfg, out: Path, device: str, compile: bool) -> dict:
    start_measuring(device)
    hf = run_hf_trainer(cfg, out, device, compile=compile)
    peak = peak_memory_gb(device)
    loss = held_out_loss(hf["model"], cfg, hf["manifest"], device, cfg.train.micro_batch_size, HELD_OUT_BATCHES)
    return {"tokens_per_s": hf["tokens_per_s"], "peak_memory_gb": peak, "held_out_loss": loss}


if __name__ == "__main__":
    main()
