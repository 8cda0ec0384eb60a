"""Process-group plumbing for the trainer: join the group torchrun (or Ray) set up, and the few collectives
the loop needs (loss averaging, grad-norm, barriers, memory figures)."""

from __future__ import annotations

import os
import resource
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megalang.parallel.elastic import restart_safe_store
from megalang.parallel.timeouts import collective_timeout


@dataclass
class ProcessGroup:
    """What this process is in the job; `owned` says whether we created the group (and must destroy it)."""

    rank: int
    world: int
    owned: bool

    def close(self) -> None:
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()


def maybe_init_process_group(device_type: str, timeout_s: float = 600, alone: bool = False) -> ProcessGroup:
    """Use the group that exists (Ray Train initialises it), else create one from torchrun's environment
    (RANK, WORLD_SIZE, MASTER_ADDR/PORT). A plain single process gets no group, unless `alone` asks for a
    group of one (DCP's checkpoint writer process needs one to join; it listens on 127.0.0.1 unless
    MASTER_ADDR says otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup(dist.get_rank(), dist.get_world_size(), owned=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and alone and dist.is_available():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        dist.init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1,
                                timeout=collective_timeout(timeout_s))
        return ProcessGroup(0, 1, owned=True)
    if world <= 1 or not dist.is_available():
        return ProcessGroup(0, 1, owned=False)
    # NCCL for CUDA tensors; gloo for CPU ones (the only CPU backend with every collective FSDP2/DCP use).
    backend = "cuda:nccl,cpu:gloo" if device_type == "cuda" else "gloo"
    # The timeout turns a stalled rank into an error on the others (parallel.timeout_s, parallel/timeouts.py).
    timeout = collective_timeout(timeout_s)
    store = restart_safe_store(timeout)  # None outside torchrun; a fresh key namespace per torchrun restart
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, timeout=timeout, store=store, rank=int(os.environ["RANK"]),
                                world_size=world)
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), owned=True)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def world_mean(value: torch.Tensor, contributors: int) -> torch.Tensor:
    """Sum a per-rank value over the world and divide by the ranks that contributed one (others pass 0):
    pipeline stages without the loss pass 0, tensor-parallel ranks of one replica pass the same value."""
    if not dist.is_initialized():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / contributors


def world_max(value: float) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def total_grad_norm(params: list[torch.nn.Parameter], pp_group=None) -> torch.Tensor:
    """The global L2 norm of all gradients, whatever the sharding: DTensor norms are reduced over their mesh
    (`full_tensor`), and pipeline stages add their squared norms (torchtitan's clip_grad_norm_)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    if pp_group is not None:
        norm = norm**2
        dist.all_reduce(norm, op=dist.ReduceOp.SUM, group=pp_group)
        norm = norm.sqrt()
    return norm


def local_bytes(tensor: torch.Tensor) -> int:
    """Bytes this rank holds for a (possibly DTensor-sharded) tensor."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters + gradients + optimizer state held by this rank (its shards only): the ZeRO-3 figure."""
    total = 0
    for p in model.parameters():
        total += local_bytes(p)
        if p.grad is not None:
            total += local_bytes(p.grad)
    for state in optimizer.state.values():
        total += sum(local_bytes(v) for v in state.values() if torch.is_tensor(v))
    return total


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the allocator's high-water mark. CPU: the process's resident-set high-water mark (ru_maxrss),
    which also counts the Python runtime and libraries, so compare it between runs, not with `state_bytes`."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # macOS reports bytes, Linux KiB
