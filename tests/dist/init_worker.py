"""Run under torchrun: build the model for each layout on the meta device, materialise it sharded, and save
this rank's full view of its weights (FSDP/TP shards gathered; a pipeline stage's own blocks) for the test.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 init_worker.py OUT_DIR
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from megalang.config import RunConfig
from megalang.parallel.build import build_parallel_model
from megalang.parallel.mesh import build_mesh, resolve_dims

VOCAB, SEQ, SEED = 64, 32, 7
LAYOUTS = {"fsdp2": {"dp_shard": 2}, "tp2": {"tp": 2, "dp_shard": 1}, "pp2": {"pp": 2, "dp_shard": 1}}


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for name, parallel in LAYOUTS.items():
        cfg = RunConfig.model_validate({"model": {"preset": "debug"}, "train": {"seq_len": SEQ, "device": "cpu"},
                                        "parallel": parallel, "seed": SEED})
        dims = resolve_dims(cfg.parallel, dist.get_world_size())
        mesh = build_mesh(dims, "cpu")
        built = build_parallel_model(cfg, VOCAB, {}, torch.device("cpu"), mesh, dims, accum=2)
        full = get_model_state_dict(built.model, options=StateDictOptions(full_state_dict=True))
        save_file({k: v.contiguous() for k, v in full.items()}, str(out / f"{name}-rank{rank}.safetensors"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
