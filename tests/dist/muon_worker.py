"""Run under torchrun: Muon steps on DTensor matrices sharded on dim 0 (FSDP2's layout, uneven row counts too)
against torch.optim.Muon's own step on the whole matrices, given the same gradients; rank 0 writes, per shape,
whether the gathered weights and momentum are bitwise equal.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 muon_worker.py OUT_JSON
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from megalang.train.muon import Muon

SHAPES = [(37, 64), (64, 37), (48, 48)]


def main(out: str) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    results = {}
    for shape in SHAPES:
        gen = torch.Generator().manual_seed(sum(shape))
        w0, grads = torch.randn(shape, generator=gen), [torch.randn(shape, generator=gen) for _ in range(3)]
        whole = torch.nn.Parameter(w0.clone())
        sharded = torch.nn.Parameter(distribute_tensor(w0.clone(), mesh, [Shard(0)]))
        opts = [Muon([whole], lr=0.02, weight_decay=0.1), Muon([sharded], lr=0.02, weight_decay=0.1)]
        for g in grads:
            whole.grad, sharded.grad = g.clone(), distribute_tensor(g.clone(), mesh, [Shard(0)])
            for opt in opts:
                opt.step()
        buf = opts[1].state[sharded]["momentum_buffer"]
        results[str(shape)] = {
            "weights_equal": torch.equal(sharded.full_tensor(), whole.detach()),
            "momentum_equal": torch.equal(buf.full_tensor(), opts[0].state[whole]["momentum_buffer"]),
            "moved": (whole.detach() - w0).abs().max().item(),
            "local_rows": sharded.to_local().shape[0],
        }
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
