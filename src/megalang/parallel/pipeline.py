"""Pipeline parallel: cut a Llama model into stages and run them under a torch.distributed.pipelining schedule.

A stage keeps the HF parameter names of the blocks it owns (`model.layers.<i>...` with the original i), so
its state dict is a slice of the single-process one and DCP checkpoints reshard between pp and no pp.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from megalang.errors import UserError

SCHEDULES = ("gpipe", "1f1b")


def stage_layer_ranges(num_layers: int, num_stages: int) -> list[range]:
    """Contiguous, as-even-as-possible block ranges; earlier stages get the extra blocks (the last stage also
    runs the head and the loss, the first the embedding, which roughly evens out for small vocabularies)."""
    base, extra = divmod(num_layers, num_stages)
    ranges, start = [], 0
    for s in range(num_stages):
        size = base + (1 if s < extra else 0)
        ranges.append(range(start, start + size))
        start += size
    return ranges


class LlamaStage(nn.Module):
    """One pipeline stage of a LlamaForCausalLM: [embedding] → its blocks → [final norm → head].

    Attribute paths mirror LlamaForCausalLM (`model.embed_tokens`, `model.layers.<i>`, `model.norm`,
    `lm_head`), so parameter names match the whole model's. Input: token ids on the first stage, hidden
    states after; output: hidden states, or logits on the last stage.
    """

    def __init__(self, full: nn.Module, layers: range, first: bool, last: bool, seq_len: int):
        super().__init__()
        self.config = full.config
        self.seq_len = seq_len  # the whole sequence: with TP a stage may receive only a sequence shard of it
        src = full.model
        self.model = nn.Module()
        self.model.embed_tokens = src.embed_tokens if first else None
        self.model.layers = nn.ModuleDict({str(i): src.layers[i] for i in layers})
        self.model.norm = src.norm if last else None
        self.model.rotary_emb = src.rotary_emb
        self.lm_head = full.lm_head if last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.model
        h = inner.embed_tokens(x) if inner.embed_tokens is not None else x
        positions = torch.arange(self.seq_len, device=h.device).unsqueeze(0)
        position_embeddings = inner.rotary_emb(h, position_ids=positions)
        for block in inner.layers.values():
            # No mask: HF's SDPA path then runs causal attention (is_causal=True), as the whole model does.
            h = block(h, attention_mask=None, position_ids=positions, position_embeddings=position_embeddings)
        if inner.norm is not None:
            h = self.lm_head(inner.norm(h))
        return h


def build_stage(meta_model: nn.Module, stage: int, num_stages: int, seq_len: int) -> LlamaStage:
    """This rank's stage, cut from a deep copy of the meta model (the original stays whole: it is the
    reference that initialisation walks so every layout draws the same weights)."""
    ranges = stage_layer_ranges(meta_model.config.num_hidden_layers, num_stages)
    if getattr(meta_model.config, "tie_word_embeddings", False) and num_stages > 1:
        raise UserError("parallel.pp > 1 needs untied embeddings (the embedding and head live on different "
                        "stages); use a preset with tie_word_embeddings=False or parallel.pp=1")
    return LlamaStage(copy.deepcopy(meta_model), ranges[stage], stage == 0, stage == num_stages - 1, seq_len)


def build_schedule(stage_module: nn.Module, stage: int, num_stages: int, device: torch.device, pp_group,
                   n_microbatches: int, loss_fn: Callable, schedule: str):
    """A PipelineStage and its schedule. Microbatches are the gradient-accumulation micro-batches; the
    schedule divides gradients by their number (scale_grads), matching the trainer's mean over them."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    if schedule == "1f1b" and n_microbatches < num_stages:
        raise UserError(
            f"parallel.pp_schedule=1f1b needs at least parallel.pp={num_stages} microbatches per step, got "
            f"{n_microbatches}; raise train.global_batch_tokens (gradient accumulation) or use pp_schedule=gpipe"
        )
    pipe_stage = PipelineStage(stage_module, stage, num_stages, device, group=pp_group)
    cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
    return cls(pipe_stage, n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=True)
