"""One GPU: a ~1B Llama at sequence length 2048 in bf16, megalang vs HF Trainer, tokens/s and MFU.

A prepared script for a GPU machine that finishes in under 10 minutes (H100/H200: about 5). Both runs
start from the same initial weights and read the same micro-batches (synthetic tokens: throughput does not
depend on what the tokens say). megalang runs its trainer with bf16 autocast, fused AdamW, the chunked
linear + cross-entropy loss (train.fused_loss; --no-fused-loss for the plain one), per-block
torch.compile and (optionally) activation checkpointing; HF Trainer runs with bf16=True, its own
torch_compile and gradient checkpointing settings matched. MFU is against the GPU's dense bf16 datasheet
peak (989 TFLOP/s for H100 SXM and H200), with the PaLM FLOPs count (6·N + attention).
Prints one JSON line.

Usage: python bench/gpu_train.py [--preset 1b] [--seq-len 2048] [--micro-batch 4] [--steps 30] [--no-compile] [--ac]
                                 [--no-fused-loss]
On a machine without CUDA it refuses unless --allow-cpu (a smoke test with a small preset).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _synthetic import synthetic_shards

WARMUP = 5  # steps excluded from the steady state (compilation, allocator growth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="1b")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--ac", action="store_true", help="activation checkpointing (both frameworks)")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--allow-cpu", action="store_true")
    parser.add_argument("--no-fused-loss", action="store_true", help="megalang with the plain logits + cross-entropy loss")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        sys.exit("bench/gpu_train.py: no CUDA device; run it on a GPU machine (or pass --allow-cpu for a smoke test)")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    torch.backends.cuda.matmul.allow_tf32 = True

    from megalang.config import RunConfig
    from megalang.model.presets import get_preset
    from megalang.monitor.flops import flops_per_token, peak_flops

    device = "cuda" if cuda else "cpu"
    vocab = get_preset(args.preset)["vocab_size"]
    tokens_per_step = args.micro_batch * args.seq_len
    result: dict = {"bench": "gpu_train", "device": torch.cuda.get_device_name() if cuda else "cpu",
                    "preset": args.preset, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                    "steps": args.steps, "compile": not args.no_compile, "activation_checkpointing": args.ac,
                    "fused_loss": not args.no_fused_loss, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shards = synthetic_shards(root, tokens_per_step * (args.steps + 2) + 200_000, vocab, 200_000, 100_000)
        cfg = RunConfig.model_validate({
            "model": {"preset": args.preset}, "data": {"shards": str(shards)},
            "train": {"max_steps": args.steps, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch,
                      "precision": "bf16", "compile": not args.no_compile, "activation_checkpointing": args.ac,
                      "lr": 3e-4, "min_lr": 3e-5, "warmup_steps": 5, "log_every": WARMUP, "eval_every": 0,
                      "eval_batches": 1, "device": device, "fused_loss": not args.no_fused_loss},
            "checkpoint": {"every": 0}, "run": {"dir": str(root / "run")}, "seed": 0,
        })
        from megalang.train.trainer import train

        summary = train(cfg)
        result["megalang_tokens_per_s"] = round(summary["tokens_per_s"], 1)
        result["megalang_mfu"] = round(summary["mfu"], 4) if summary["mfu"] else None
        result["megalang_loss_last"] = round(summary["train_loss_last"], 4)
        if cuda:
            result["megalang_peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        if not args.skip_hf:
            hf = run_hf_trainer(cfg, root, args, device)
            fpt = flops_per_token(hf.pop("config"), args.seq_len)
            peak = peak_flops(device, "bf16")
            result["hf_trainer_tokens_per_s"] = round(hf["tokens_per_s"], 1)
            result["hf_trainer_mfu"] = round(hf["tokens_per_s"] * fpt / peak, 4) if peak else None
            result["hf_trainer_loss_last"] = round(hf["loss_last"], 4)
            result["ratio_vs_hf_trainer"] = round(summary["tokens_per_s"] / hf["tokens_per_s"], 3)
    print(json.dumps(result))


def run_hf_trainer(cfg, root: Path, args, device: str) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from megalang.data.loader import SampleLoader
    from megalang.data.shards import open_split, read_shard_manifest
    from megalang.model.build import build_model, special_ids
    from megalang.train.optim import build_optimizer, build_scheduler

    manifest = read_shard_manifest(cfg.data.shards)
    model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed, device)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    loader = SampleLoader(open_split(cfg.data.shards, "train", manifest), cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed)
    steps = cfg.train.max_steps

    class Batches(torch.utils.data.IterableDataset):
        def __iter__(self):
            for step in range(steps):
                input_ids, labels = loader.batch_at(step * loader.micro_batch)
                labels = labels.contiguous()
                yield {"input_ids": input_ids, "labels": labels, "shift_labels": labels}

    stamps: list[float] = []
    losses: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if not stamps:
                stamps.append(time.perf_counter())

        def on_step_end(self, a, state, control, **kw):
            if device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    targs = TrainingArguments(
        output_dir=str(root / "hf"), max_steps=steps, per_device_train_batch_size=1, max_grad_norm=1.0,
        bf16=True, use_cpu=device == "cpu", logging_steps=WARMUP, save_strategy="no", report_to=[],
        dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed, remove_unused_columns=False,
        torch_compile=cfg.train.compile, gradient_checkpointing=cfg.train.activation_checkpointing,
    )
    Trainer(model=model, args=targs, train_dataset=Batches(), data_collator=lambda items: items[0],
            optimizers=(optimizer, scheduler), callbacks=[Clock()]).train()
    tokens = cfg.train.micro_batch_size * cfg.train.seq_len
    rate = (len(stamps) - 1 - WARMUP) * tokens / (stamps[-1] - stamps[WARMUP])
    return {"tokens_per_s": rate, "loss_last": losses[-1] if losses else float("nan"), "config": model.config}


if __name__ == "__main__":
    main()
