"""Run under torchrun: build a pretrained model (model.pretrained, a Hugging Face folder) sharded with FSDP2 the way
the trainer does, and write what the test checks: the largest difference between the gathered weights and the
file's, and whether the tied embedding stays one parameter (and equal to the head) after an optimizer step.

Usage: python -m torch.distributed.run --standalone --nproc-per-node 2 pretrained_worker.py MODEL_DIR OUT.json
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from megalang.config import RunConfig
from megalang.parallel.build import build_parallel_model
from megalang.parallel.mesh import build_mesh, resolve_dims

SEQ = 16


def main(model_dir: Path, out: Path) -> None:
    dist.init_process_group("gloo")
    cfg = RunConfig.model_validate({"model": {"pretrained": str(model_dir)}, "train": {"seq_len": SEQ, "device": "cpu"}})
    dims = resolve_dims(cfg.parallel, dist.get_world_size())
    model = build_parallel_model(cfg, 0, {}, torch.device("cpu"), build_mesh(dims, "cpu"), dims, accum=1).model
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    result = {"tied_before": model.lm_head.weight is model.model.embed_tokens.weight}
    if dist.get_rank() == 0:
        saved = load_file(str(model_dir / "model.safetensors"))
        result["keys_missing"] = sorted(set(saved) - set(full))
        result["max_abs_diff"] = max((full[k] - v).abs().max().item() for k, v in saved.items())
        result["sharded"] = type(model.model.layers[0].mlp.up_proj.weight).__name__
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 1000, (1, SEQ), generator=torch.Generator().manual_seed(dist.get_rank()))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    after = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    result["tied_after"] = model.lm_head.weight is model.model.embed_tokens.weight and torch.equal(
        after["lm_head.weight"], after["model.embed_tokens.weight"])
    result["changed"] = not torch.equal(after["model.embed_tokens.weight"], full["model.embed_tokens.weight"])
    if dist.get_rank() == 0:
        out.write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
