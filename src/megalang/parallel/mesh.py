"""The device mesh: how the world's ranks split into pipeline stages, data-parallel replicas/shards and
tensor-parallel groups, from the `parallel.*` degrees (torchtitan's ParallelDims).

Mesh dimensions, outermost first: pp × dp_replicate × dp_shard × tp. Tensor parallel is innermost so its
(most frequent, latency-bound) collectives stay within a node; pipeline is outermost because its
point-to-point traffic is the lightest and tolerates the slowest links.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from megalang.config import ParallelConfig
from megalang.errors import UserError

DIM_NAMES = ("pp", "dp_replicate", "dp_shard", "tp")


@dataclass(frozen=True)
class ParallelDims:
    """Resolved degrees (no -1 left); their product is the world size."""

    pp: int
    dp_replicate: int
    dp_shard: int
    tp: int

    @property
    def world(self) -> int:
        return self.pp * self.dp_replicate * self.dp_shard * self.tp

    @property
    def dp(self) -> int:
        """Data-parallel ranks: each sees different samples (tp and pp ranks of one replica see the same)."""
        return self.dp_replicate * self.dp_shard

    @property
    def fsdp(self) -> bool:
        return self.dp_shard > 1

    @property
    def ddp(self) -> bool:
        """Plain replication (DDP): replicas without sharding. dp_replicate with dp_shard > 1 is HSDP."""
        return self.dp_replicate > 1 and self.dp_shard == 1

    def degrees(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in DIM_NAMES}


def resolve_dims(cfg: ParallelConfig, world: int, model_config: Any | None = None) -> ParallelDims:
    """Fill the one -1 degree from the world size and check the layout can run this model."""
    degrees = {name: getattr(cfg, name) for name in DIM_NAMES}
    fixed = 1
    for value in degrees.values():
        fixed *= value if value != -1 else 1
    free = [name for name, value in degrees.items() if value == -1]
    if free:
        if world % fixed:
            raise UserError(
                f"parallel: {world} ranks cannot be split with the fixed degrees "
                f"{_describe(degrees)} (their product {fixed} must divide the world size)"
            )
        degrees[free[0]] = world // fixed
    dims = ParallelDims(**degrees)
    if dims.world != world:
        raise UserError(
            f"parallel: {_describe(degrees)} multiply to {dims.world} but {world} ranks were started; "
            "make the product equal the world size (or set one degree to -1)"
        )
    if model_config is not None:
        check_model_fits(dims, model_config)
    return dims


def check_model_fits(dims: ParallelDims, config: Any) -> None:
    """Layouts that cannot split this model: attention heads and KV heads over tp, blocks over pp."""
    problems = []
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if heads % dims.tp:
        problems.append(f"num_attention_heads={heads} is not divisible by parallel.tp={dims.tp}")
    if kv_heads % dims.tp:
        problems.append(f"num_key_value_heads={kv_heads} is not divisible by parallel.tp={dims.tp}")
    if config.intermediate_size % dims.tp:
        problems.append(f"intermediate_size={config.intermediate_size} is not divisible by parallel.tp={dims.tp}")
    if config.num_hidden_layers < dims.pp:
        problems.append(f"num_hidden_layers={config.num_hidden_layers} is fewer than parallel.pp={dims.pp} stages")
    if problems:
        raise UserError("parallel: the model cannot be split this way: " + "; ".join(problems)
                        + " (choose other degrees or another model.preset)")


def build_mesh(dims: ParallelDims, device_type: str) -> torch.distributed.device_mesh.DeviceMesh:
    """One DeviceMesh over all four dimensions (size-1 ones included, so every pass can index by name), plus
    the flattened `dp` (replicate × shard) that the data loader and loss averaging use."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device_type, tuple(getattr(dims, n) for n in DIM_NAMES), mesh_dim_names=DIM_NAMES)
    mesh["dp_replicate", "dp_shard"]._flatten("dp")
    return mesh


def data_rank(mesh, dims: ParallelDims) -> tuple[int, int]:
    """(rank, ranks) of this process among the data-parallel ranks."""
    return mesh["dp"].get_local_rank(), dims.dp


def _describe(degrees: dict[str, int]) -> str:
    return " × ".join(f"{name}={value}" for name, value in degrees.items())
