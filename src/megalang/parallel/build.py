"""Build the model a multi-process run trains: meta model → [pipeline stage] → parallelize → materialize.

No rank allocates the whole model: weights exist only as this rank's shards (or its stage's blocks), and
`init_weights` draws them from the same random stream one process would, so every layout starts equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from megalang.config import RunConfig
from megalang.errors import UserError
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


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean next-token cross-entropy, in fp32 whatever the autocast dtype (the log-sum-exp needs it)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())


def build_parallel_model(cfg: RunConfig, vocab_size: int, special: dict[str, Any], device: torch.device,
                         mesh, dims: ParallelDims, accum: int) -> ParallelModel:
    if cfg.model.pretrained:
        raise UserError("model.pretrained is not supported with more than one process yet; train it on one "
                        "process, or start from a preset")
    meta = build_model(cfg.model, vocab_size, cfg.train.seq_len, special, cfg.seed, device="meta")
    if dims.pp == 1:
        parallelize(meta, mesh, cfg.train, cfg.parallel)
        materialize(meta, device, cfg.seed)
        return ParallelModel(meta)
    stage = mesh["pp"].get_local_rank()
    part = build_stage(meta, stage, dims.pp, cfg.train.seq_len)
    parallelize(part, mesh, cfg.train, cfg.parallel)
    materialize(part, device, cfg.seed, reference=meta)
    schedule = build_schedule(part, stage, dims.pp, device, mesh["pp"].get_group(), accum, causal_lm_loss,
                              cfg.parallel.pp_schedule)
    return ParallelModel(part, schedule, first_stage=stage == 0, last_stage=stage == dims.pp - 1)
