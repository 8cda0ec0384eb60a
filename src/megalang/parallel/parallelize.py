"""Apply parallelism and memory/speed passes to a plain transformers model, one single-purpose pass each.

Order (torchtitan's): tensor parallel → activation checkpointing → compile per block → FSDP (or DDP). TP first
because it replaces weights with DTensors that every later pass must see; AC wraps a block before compile so
the compiled region includes the recomputation; FSDP comes last so it shards what the other passes produced.
The model may still be on the meta device: nothing here allocates weights (`materialize` does, afterwards).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from megalang.config import ParallelConfig, TrainSection
from megalang.torch_compat import checkpoint_block, replicate


def parallelize(
    model: nn.Module, mesh: Any, train_cfg: TrainSection, parallel_cfg: ParallelConfig | None = None
) -> nn.Module:
    """Apply every pass the config asks for, in place; `mesh=None` means one process (no sharding).

    `model` is a LlamaForCausalLM or one pipeline stage of it (parallel/pipeline.py); both keep the HF
    parameter names, which is what lets checkpoints move between layouts.
    """
    parallel_cfg = parallel_cfg or ParallelConfig()
    tp = mesh["tp"].size() if mesh is not None else 1
    if tp > 1:
        apply_tp(model, mesh["tp"])
    if train_cfg.activation_checkpointing:
        apply_ac(model, train_cfg.activation_checkpointing_every)
    if train_cfg.compile:
        # One process: the model is already on its device; otherwise it is on `meta` and the mesh knows.
        device_type = mesh.device_type if mesh is not None else next(model.parameters()).device.type
        apply_compile(model, cpu=device_type == "cpu")
    if mesh is None:
        return model
    replicate, shard = mesh["dp_replicate"].size(), mesh["dp_shard"].size()
    if shard > 1 or (replicate > 1 and tp > 1):
        # HSDP when both are > 1: shard within a group, all-reduce across groups. DDP cannot take the DTensor
        # weights TP makes, so replication next to TP goes through FSDP2's 2-D mesh as well.
        dp_mesh = mesh["dp_replicate", "dp_shard"] if replicate > 1 else mesh["dp_shard"]
        bf16 = train_cfg.precision == "bf16" and parallel_cfg.mixed_precision
        apply_fsdp(model, dp_mesh, param_dtype=torch.bfloat16 if bf16 else None,
                   cpu_offload=parallel_cfg.cpu_offload, reshard_after_forward=mesh["pp"].size() == 1)
    elif replicate > 1:
        apply_ddp(model, mesh["dp_replicate"])
    return model


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks: `model.model.layers` in every Llama-family HF model (a ModuleList) and
    in a pipeline stage (a ModuleDict keyed by the original block index)."""
    layers = model.model.layers if hasattr(model, "model") else model.get_decoder().layers
    return list(layers.values()) if isinstance(layers, nn.ModuleDict) else list(layers)


def apply_tp(model: nn.Module, tp_mesh) -> None:
    """Megatron-style tensor parallel over DTensor, with sequence parallel on the norms (torchtitan's plan).

    Attention: q/k/v column-parallel (each rank holds whole heads, so the HF `view(..., -1, head_dim)` sees
    local heads) and o row-parallel; MLP: gate/up column-, down row-parallel. Between them the residual
    stream is sharded along the sequence (Shard(1)) and the RMSNorms run sequence-parallel, so a block needs
    one all-gather and one reduce-scatter per sub-layer instead of all-reduces, and norm activations shrink
    by tp. The embedding output stays whole: HF Llama derives positions and the causal mask from its length,
    so the sequence is split at the first block's input instead (a local slice, no communication).
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    inner = model.model
    top: dict[str, Any] = {}
    if getattr(inner, "embed_tokens", None) is not None:
        top["model.embed_tokens"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    if getattr(inner, "norm", None) is not None:
        top["model.norm"] = SequenceParallel()
    if getattr(model, "lm_head", None) is not None:
        top["lm_head"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    parallelize_module(model, tp_mesh, top)
    for block in decoder_blocks(model):
        parallelize_module(block, tp_mesh, {
            "input_layernorm": SequenceParallel(),
            "self_attn": PrepareModuleInput(
                input_kwarg_layouts={"hidden_states": Shard(1)},
                desired_input_kwarg_layouts={"hidden_states": Replicate()},
                use_local_output=True,
            ),
            "self_attn.q_proj": ColwiseParallel(),
            "self_attn.k_proj": ColwiseParallel(),
            "self_attn.v_proj": ColwiseParallel(),
            "self_attn.o_proj": RowwiseParallel(output_layouts=Shard(1)),
            "post_attention_layernorm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                      use_local_output=True),
            "mlp.gate_proj": ColwiseParallel(),
            "mlp.up_proj": ColwiseParallel(),
            "mlp.down_proj": RowwiseParallel(output_layouts=Shard(1)),
        })
    # Every block takes and returns a sequence shard; the whole sequence enters the first block of this model
    # (stage) and each rank keeps its slice. A later pipeline stage receives the shard-shaped activations of
    # the previous stage's last block, so only a stage holding the embedding needs the split.
    blocks = decoder_blocks(model)
    if blocks and getattr(inner, "embed_tokens", None) is not None:
        parallelize_module(blocks[0], tp_mesh, PrepareModuleInput(
            input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),), use_local_output=True))
    # Attention modules split heads across ranks: their per-rank head counts are what `view` must see.


def apply_ac(model: nn.Module, every: int = 1) -> None:
    """Recompute block activations in backward: every block, or every k-th (selective: trades some of the
    memory saving for less recomputation). HF's per-layer checkpointing keeps parameter names.

    Non-reentrant checkpointing: works with compile and FSDP and needs no inputs that require grad.
    """
    kwargs = {"use_reentrant": False}
    if every == 1 and hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif every == 1 and hasattr(model, "gradient_checkpointing_enable"):  # the older name
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:  # every k-th, or a pipeline stage (a plain module): set the switch HF's blocks carry themselves
        for i, block in enumerate(decoder_blocks(model)):
            if i % every == 0:
                checkpoint_block(block, functools.partial(torch.utils.checkpoint.checkpoint, **kwargs))


def apply_compile(model: nn.Module, cpu: bool = False) -> None:
    """torch.compile each block in place: blocks are identical, so one compiled graph serves them all, and
    compile time stays that of one block however deep the model is. In place keeps parameter names.

    On a CPU only each block's MLP and its two norms are compiled and attention stays eager: whole compiled
    blocks measured no gain there (the CPU flash-attention kernel ran slower inside the compiled graph), while
    compiled MLPs and norms took the fp32 `tiny` step from 0.87–0.92 s to 0.85 s (bf16: unchanged at 0.42 s;
    docs/benchmarks.md)."""
    for block in decoder_blocks(model):
        if not cpu:
            block.compile(fullgraph=False)
            continue
        for part in (block.mlp, block.input_layernorm, block.post_attention_layernorm):
            part.compile(fullgraph=False)


def apply_fsdp(model: nn.Module, dp_mesh, param_dtype: torch.dtype | None, cpu_offload: bool,
               reshard_after_forward: bool = True) -> None:
    """FSDP2 `fully_shard` per block, then the root (embedding, final norm, head): ZeRO-3.

    Per-block units let the all-gather of block i+1 overlap block i's compute and bound the unsharded
    weights to about one block. Gradients reduce in fp32 even when weights compute in bf16 (summing many
    ranks' bf16 gradients loses bits). The last block stays unsharded after forward: backward needs it at
    once. Under pipeline parallel the root stays unsharded too (microbatches reuse it).
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    config: dict[str, Any] = {
        "mesh": dp_mesh,
        "mp_policy": MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32),
    }
    if cpu_offload:
        config["offload_policy"] = CPUOffloadPolicy()
    blocks = decoder_blocks(model)
    for i, block in enumerate(blocks):
        fully_shard(block, **config, reshard_after_forward=reshard_after_forward and i < len(blocks) - 1)
    fully_shard(model, **config, reshard_after_forward=reshard_after_forward)


def apply_ddp(model: nn.Module, dp_mesh) -> None:
    """Plain data parallel (DDP through the composable `replicate`, which keeps parameter names, so
    checkpoints need no 'module.' prefix juggling). Gradients are all-reduced in buckets during backward."""
    replicate(model, device_mesh=dp_mesh, bucket_cap_mb=100)
