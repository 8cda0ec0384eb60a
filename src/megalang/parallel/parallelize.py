"""Apply parallelism and memory/speed passes to a plain transformers model, one single-purpose pass each.

Order (torchtitan's): tensor parallel → activation checkpointing → compile per block → FSDP. AC wraps a block
before compile so the compiled region includes the recomputation, and FSDP comes last so it shards what the
other passes produced. One process runs only the AC and compile passes; the sharding passes slot in here.
"""

from __future__ import annotations

from typing import Any

import torch

from megalang.config import TrainSection


def parallelize(model: torch.nn.Module, mesh: Any, train_cfg: TrainSection) -> torch.nn.Module:
    """Apply every pass the config asks for, in place; `mesh=None` means one process (no sharding)."""
    if mesh is not None:
        raise NotImplementedError("multi-process parallelism (FSDP2/TP/PP) is not wired in yet")
    if train_cfg.activation_checkpointing:
        apply_ac(model)
    if train_cfg.compile:
        apply_compile(model)
    return model


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated transformer blocks (`model.model.layers` in every Llama-family HF model)."""
    return model.get_decoder().layers


def apply_ac(model: torch.nn.Module) -> None:
    """Recompute each block's activations in backward (HF's per-layer checkpointing keeps parameter names).

    Non-reentrant checkpointing: works with compile and FSDP and needs no inputs that require grad.
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def apply_compile(model: torch.nn.Module) -> None:
    """torch.compile each block in place: blocks are identical, so one compiled graph serves them all, and
    compile time stays that of one block however deep the model is. In place keeps parameter names."""
    for block in decoder_blocks(model):
        block.compile(fullgraph=False)
