"""Build the model a multi-process run trains: meta model → [pipeline stage] → parallelize → materialize.

No rank allocates the whole model: weights exist only as this rank's shards (or its stage's blocks), and
`init_weights` draws them from the same random stream one process would, so every layout starts equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from megalang.config import RunConfig
from megalang.model.build import build_model, materialize
from megalang.parallel.mesh import ParallelDims
from megalang.parallel.parallelize import parallelize
from megalang.parallel.pipeline import build_schedule, build_stage


@dataclass
class ParallelModel:
    model: torch.nn.Module  # the whole (sharded) model, or this rank's pipeline stage
    schedule: Any = None  # the pipelining schedule when pp > 1
    first_stage: bool = True
    last_stage: bool = True


def build_parallel_model(cfg: RunConfig, vocab_size: int, special: dict[str, Any], device: torch.device,
                         mesh, dims: ParallelDims, accum: int, loss_fn=None) -> ParallelModel:
    """`loss_fn(logits, labels)`: the loss the last pipeline stage computes (pp > 1 only)."""
    if cfg.model.pretrained:
        return ParallelModel(build_pretrained_sharded(cfg, vocab_size, device, mesh, dims))
    meta = build_model(cfg.model, vocab_size, cfg.train.seq_len, special, cfg.seed, device="meta")
    if dims.pp == 1:
        parallelize(meta, mesh, cfg.train, cfg.parallel)
        materialize(meta, device, cfg.seed)
        return ParallelModel(meta)
    stage = mesh["pp"].get_local_rank()
    part = build_stage(meta, stage, dims.pp, cfg.train.seq_len)
    parallelize(part, mesh, cfg.train, cfg.parallel)
    materialize(part, device, cfg.seed, reference=meta)
    schedule = build_schedule(part, stage, dims.pp, device, mesh["pp"].get_group(), accum, loss_fn,
                              cfg.parallel.pp_schedule)
    return ParallelModel(part, schedule, first_stage=stage == 0, last_stage=stage == dims.pp - 1)


def build_pretrained_sharded(cfg: RunConfig, vocab_size: int, device: torch.device, mesh, dims: ParallelDims):
    """model.pretrained: meta model → FSDP2 → empty shards → pretrained weights broadcast from rank 0
    (parallel/pretrained.py). No seed: every value comes from the checkpoint."""
    from megalang.parallel.pretrained import build_meta_pretrained, check_pretrained_layout, load_pretrained_sharded

    check_pretrained_layout(dims)
    model = build_meta_pretrained(cfg, vocab_size)
    parallelize(model, mesh, cfg.train, cfg.parallel)
    materialize(model, device, seed=None)
    load_pretrained_sharded(model, cfg, vocab_size, device)
    return model
