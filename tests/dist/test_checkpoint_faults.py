"""Crash consistency and checkpoint integrity on 2 ranks (FSDP2 through `megalang launch`), against the
uninterrupted 2-rank run of the same command (`fsdp_run`: checkpoints at steps 4 and 8)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist.conftest import LAUNCH_TIMEOUT, STEPS, common_overrides
from megalang.store.checkpoints import complete_checkpoints
from megalang.store.run_dir import COMPLETE
from megalang.model.load import load_trained_model
from megalang.train.faults import FAULT_SAVE_ENV

pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]


def launch(shards: Path, run: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "megalang", "launch", "--nproc", "2", "--", "train", *common_overrides(shards, run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAULT_SAVE_ENV, None)
    if fault:
        env[FAULT_SAVE_ENV] = fault
    return subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)


def test_two_ranks_killed_before_metadata_resume_to_the_same_weights(fsdp_run, dist_shards, tmp_path):
    """Rank 0 dies after both ranks wrote their step-8 shards, before DCP's .metadata: step-4 stays the newest
    complete checkpoint, and the rerun (which verifies it on both ranks, half the files each) ends bitwise equal."""
    run = tmp_path / "run"
    killed = launch(dist_shards, run, fault=f"before_metadata:{STEPS}")
    assert killed.returncode != 0
    tmp = {p.name for p in (run / "checkpoints" / f"step-{STEPS}.tmp").iterdir()}
    assert {"__0_0.distcp", "__1_0.distcp"} <= tmp and ".metadata" not in tmp and COMPLETE not in tmp
    assert [s for s, _ in complete_checkpoints(run)] == [4]

    rerun = launch(dist_shards, run)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    got, _ = load_trained_model(run, step=STEPS)
    want, _ = load_trained_model(fsdp_run, step=STEPS)
    for name, tensor in want.state_dict().items():
        assert torch.equal(got.state_dict()[name], tensor), name


def test_two_ranks_stop_on_a_flipped_byte(fsdp_run, dist_shards, tmp_path):
    """The byte is in a file rank 1 hashes (files are split between ranks): rank 0 must stop too, with exit 2."""
    run = tmp_path / "run"
    shutil.copytree(fsdp_run, run)
    target = run / "checkpoints" / f"step-{STEPS}" / "__0_0.distcp"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x10
    target.write_bytes(bytes(data))
    result = launch(dist_shards, run)
    assert result.returncode == 2, result.stderr[-4000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2 and all("__0_0.distcp: SHA-256 differs" in line and "corrupt" in line for line in errors)
