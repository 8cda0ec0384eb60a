"""train.optimizer=muon on CPU ranks (gloo): the sharded Muon step against torch.optim.Muon on the whole matrix, and
FSDP2 (2 ranks), DDP (2) and HSDP (2 × 2) runs against the same run on one process (docs/training.md "Muon")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist.conftest import STEPS, assert_losses_match, copy_until, launch_train, metrics, train_here
from megalang.model.load import load_trained_model

pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]

MUON = "train.optimizer=muon"


def test_sharded_muon_steps_are_bitwise_torch_muon_on_the_whole_matrix(tmp_path):
    """Given the same gradients, gathering, orthogonalising and keeping this rank's rows changes nothing: three
    steps on dim-0 shards (19/18 rows of 37 too) equal torch.optim.Muon's own step bit for bit."""
    out = tmp_path / "muon.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(Path(__file__).with_name("muon_worker.py")), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert set(results) == {"(37, 64)", "(64, 37)", "(48, 48)"} and results["(37, 64)"]["local_rows"] == 19
    for shape, result in results.items():
        assert result["weights_equal"] and result["momentum_equal"] and result["moved"] > 0.01, (shape, result)


@pytest.fixture(scope="module")
def muon_single(dist_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("muon-single") / "run"
    train_here(dist_shards, run, MUON)
    return run


@pytest.fixture(scope="module")
def muon_fsdp(dist_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("muon-fsdp") / "run"
    launch_train(2, dist_shards, run, MUON)
    return run


def test_fsdp2_muon_matches_single_process(muon_fsdp, muon_single):
    """Losses to 1e-4 (as AdamW's FSDP2 test); weights after 8 steps to 2e-3 (measured 4e-4, AdamW's 1.2e-7):
    the reduce-scattered gradients differ from one process's in the last fp32 bits, and torch's bf16
    Newton–Schulz turns that into bf16-sized differences of the update (the step itself is exact: test above)."""
    run, reference = metrics(muon_fsdp), metrics(muon_single)
    assert_losses_match(run, reference, range(1, STEPS + 1))
    got, want = (load_trained_model(r)[0].state_dict() for r in (muon_fsdp, muon_single))
    assert got.keys() == want.keys()
    worst = max((got[k] - want[k]).abs().max().item() for k in want)
    assert worst < 2e-3, worst


def test_fsdp2_muon_checkpoint_resumes_on_one_process(muon_fsdp, muon_single, dist_shards, tmp_path):
    """The sharded momentum buffers, saved by 2 ranks, load on one process and the run continues as before."""
    run = copy_until(muon_fsdp, tmp_path / "run", 4)
    train_here(dist_shards, run, MUON)
    resumed = metrics(run)
    assert_losses_match(resumed, metrics(muon_single), range(5, STEPS + 1))
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    assert torch.is_tensor(load_trained_model(run)[0].lm_head.weight)


@pytest.mark.parametrize("nproc, extra", [
    (2, ["parallel.dp_replicate=2", "parallel.dp_shard=1"]),  # DDP: plain tensors, torch's own step on each rank
    (4, ["parallel.dp_replicate=2", "parallel.dp_shard=2", "train.micro_batch_size=2"]),  # HSDP: 2-D mesh DTensors
], ids=["ddp2", "hsdp2x2"])
def test_ddp_and_hsdp_muon_match_single_process(nproc, extra, muon_single, dist_shards, tmp_path):
    launch_train(nproc, dist_shards, tmp_path / "run", MUON, *extra)
    assert_losses_match(metrics(tmp_path / "run"), metrics(muon_single), range(1, STEPS + 1))
