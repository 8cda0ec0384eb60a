"""A pretrained model (`model.pretrained`) under FSDP2: built on the meta device, sharded, then filled with the
pretrained weights, which only rank 0 reads from disk (torchtitan's way).

Rank 0 holds one full copy on the host while it broadcasts; every other rank only ever holds its shards.
`set_model_state_dict(full_state_dict=True, broadcast_from_rank0=True)` sends each full tensor from rank 0 and
every rank keeps its own slice of it, so the sharded model starts from exactly the pretrained weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.parallel.mesh import ParallelDims


def check_pretrained_layout(dims: ParallelDims) -> None:
    """FSDP2 / HSDP / DDP shard or replicate whole HF modules; TP and PP plans are only tested on the presets."""
    if dims.tp > 1 or dims.pp > 1:
        raise UserError(f"model.pretrained trains with data parallelism (FSDP2) only; got parallel.tp={dims.tp}, "
                        f"parallel.pp={dims.pp}: set both to 1, or start from a preset")


def pretrained_config(path_str: str):
    """The model's transformers config (a Hugging Face folder's config.json, or read from a .gguf header)."""
    from transformers import AutoConfig

    from megalang.model.build import pretrained_source

    path = Path(path_str)
    folder, extra = pretrained_source(path)
    try:
        return AutoConfig.from_pretrained(folder, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"model.pretrained={path}: cannot read its config ({str(e).splitlines()[0]})") from None


def build_meta_pretrained(cfg: RunConfig, vocab_size: int):
    """The pretrained architecture on the meta device (no weights), checked against the data on every rank, so a
    mismatch stops all ranks with the same message instead of rank 0 alone."""
    from transformers import AutoModelForCausalLM

    from megalang.model.build import check_pretrained_fits

    config = pretrained_config(cfg.model.pretrained)
    config.attention_dropout = cfg.model.dropout
    check_pretrained_fits(config, cfg.model.pretrained, vocab_size, cfg.train.seq_len)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    return model.train()


def load_pretrained_sharded(model, cfg: RunConfig, vocab_size: int, device: torch.device) -> None:
    """Fill an already sharded and materialised model with the pretrained weights, read on rank 0 only.

    Tied weights (SmolLM2 ties lm_head to embed_tokens) stay one parameter: `materialize` re-tied them after
    `to_empty`, and the state dict loads into that single tensor.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    from megalang.model.build import load_pretrained

    full = {}
    if dist.get_rank() == 0:
        full = load_pretrained(cfg.model, vocab_size, cfg.train.seq_len).state_dict()
        full = {k: v.to(device) for k, v in full.items()}
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full, options=options)
    del full  # rank 0's full copy goes before the first step allocates activations and optimizer state
