"""LoRA adapters through peft: apply them to a model, count what trains, rebuild a trained run for export.

A LoRA run's checkpoints hold only the trainable tensors (adapters and their optimizer state); the frozen
base comes back from `model.pretrained`, so rebuilding needs that path to still exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from megalang.config import LoraConfig, RunConfig
from megalang.errors import UserError


def check_lora_targets(model, targets: list[str]) -> None:
    """Every target must name at least one Linear module; peft's own error lists none of what exists."""
    linear_names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in targets if t not in linear_names]
    if missing:
        raise UserError(f"lora.targets: {', '.join(missing)} not found in the model; its linear layers are "
                        f"{', '.join(sorted(linear_names))}")


def apply_lora(model, cfg: LoraConfig):
    """Freeze the base and add adapters to `cfg.targets`; returns the peft model (same forward signature)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    check_lora_targets(model, cfg.targets)
    if cfg.qlora:
        from peft import prepare_model_for_kbit_training

        # Every non-4-bit weight (norms, embeddings, head) in fp32 for stable adapter training. Checkpointing
        # stays the trainer's (non-reentrant, train.activation_checkpointing), which needs no input-grad hook.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    peft_cfg = PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.targets), task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, peft_cfg)


def check_qlora(cfg: LoraConfig, device: torch.device) -> None:
    """QLoRA keeps the frozen base in 4-bit through bitsandbytes, whose kernels need CUDA."""
    if not cfg.qlora:
        return
    if device.type != "cuda":
        raise UserError("lora.qlora=true needs a CUDA GPU (bitsandbytes 4-bit kernels); on CPU use plain LoRA "
                        "(lora.qlora=false)")
    if cfg.rank == 0:
        raise UserError("lora.qlora=true needs lora.rank > 0 (a 4-bit base cannot be trained directly)")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("lora.qlora=true needs bitsandbytes; pip install 'megalang[qlora]'") from None


def quantization_config(cfg: LoraConfig, device: torch.device | None = None) -> dict[str, Any]:
    """from_pretrained kwargs for a 4-bit NF4 base (QLoRA); empty without qlora.

    NF4 with double quantization (the QLoRA paper's choice: ~4.1 bits per weight), matmuls in bf16. bitsandbytes
    quantizes while loading onto the GPU, so the base is placed by `device_map` and never exists there in fp32.
    """
    if not cfg.qlora:
        return {}
    from transformers import BitsAndBytesConfig

    device = device or torch.device("cuda", 0)
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_compute_dtype=torch.bfloat16,
                                                      bnb_4bit_use_double_quant=True),
            "device_map": {"": device.index or 0}}


def param_counts(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def load_lora_checkpoint(path: str | Path, cfg: RunConfig, merge: bool = True):
    """A LoRA run's checkpoint as a model: base from model.pretrained + the saved adapters; merged by default
    (a plain transformers model), else the peft model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    from megalang.model.build import load_pretrained
    from megalang.safe_load import load_dcp

    if not cfg.model.pretrained or not Path(cfg.model.pretrained).exists():
        raise UserError(f"{path}: this LoRA run needs its base model.pretrained={cfg.model.pretrained}, which is "
                        "missing; restore it to export or load the run")
    model = apply_lora(load_pretrained(cfg.model, 0, cfg.train.seq_len), cfg.lora)
    options = StateDictOptions(ignore_frozen_params=True, strict=False)
    state = {"model": get_model_state_dict(model, options=options)}
    load_dcp(state, path)  # never unpickles arbitrary objects
    set_model_state_dict(model, state["model"], options=options)
    model.eval()
    return model.merge_and_unload() if merge else model


def maybe_export_adapter(run: Path, out, step: int | None, overwrite: bool, tokenizer_files: dict[str, str],
                         release=None):
    """A LoRA run without --merge: the peft adapter folder (adapter_config.json + safetensors) and tokenizer,
    loadable with `PeftModel.from_pretrained(base, OUT)`. None for a run without LoRA. `release` (export/release.py
    `Release`) adds the model card, datasheet and BOM before the manifest and signs the folder after it."""
    import shutil

    from megalang.config import build_config
    from megalang.store.checkpoints import find_checkpoint, read_run_config, verify_files
    from megalang.store.files import staging_dir
    from megalang.store.manifest import describe_input, write_manifest
    from megalang.store.run_dir import CheckpointFiles, RunDir

    path = find_checkpoint(run, step)
    verify_files(path)  # every file against COMPLETE.json before reading any
    cfg = build_config(RunConfig, read_run_config(path)["config"], str(path / CheckpointFiles.RUN_CONFIG))
    if not cfg.lora.rank:
        return None
    model = load_lora_checkpoint(path, cfg, merge=False)
    with staging_dir(out, overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for src, dst in tokenizer_files.items():
            if (RunDir(run).tokenizer / src).is_file():
                shutil.copyfile(RunDir(run).tokenizer / src, tmp / dst)
        trainable, _total = param_counts(model)
        files = None
        if release is not None:
            tokenizer = tmp / "tokenizer.json"
            files = release.describe(tmp, model, run, "run", cfg, step, tokenizer if tokenizer.is_file() else None,
                                     fmt="peft")
        manifest = write_manifest(tmp, "export", config={"run": str(run.resolve()), "step": step, "merge": False,
                                                         "base": cfg.model.pretrained},
                                  inputs=[describe_input(run)], counts={"adapter_params": trainable},
                                  known_files=files, format="peft")
        if release is not None:
            release.seal(tmp)
        return manifest
