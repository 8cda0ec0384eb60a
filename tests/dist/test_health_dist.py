"""Numerical health across ranks (docs/reliability.md, promise 6): a NaN loss planted on rank 1 only is agreed
by both ranks before the update: `skip` skips the step on both, `stop` stops both naming rank 1 and the step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dist.conftest import LAUNCH_TIMEOUT, common_overrides
from megalang.store.checkpoints import complete_checkpoints
from megalang.train.faults import FAULT_LOSS_ENV

pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]


def launch(run_dir, shards, fault: str, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "megalang", "launch", "--nproc", "2", "--", "train",
           *common_overrides(shards, run_dir), "checkpoint.every=2", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", FAULT_LOSS_ENV: fault}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)


def test_nan_on_one_rank_is_skipped_by_both(dist_shards, tmp_path):
    run = tmp_path / "skip"
    proc = launch(run, dist_shards, "nan:3:1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_steps"] == 1 and summary["skipped_at"] == [3]
    assert "step 3: non-finite loss on rank 1; update skipped" in proc.stderr
    state = json.loads((run / "checkpoints/step-8/trainer_state.json").read_text())
    assert state["health"]["skipped_at"] == [3]  # the counters travel with the checkpoint


def test_stop_policy_stops_both_ranks_naming_rank_and_step(dist_shards, tmp_path):
    run = tmp_path / "stop"
    proc = launch(run, dist_shards, "nan:3:1", "health.nonfinite=stop")
    assert proc.returncode != 0
    assert "step 3: non-finite loss on rank 1 (health.nonfinite=stop)" in " ".join(proc.stderr.split())
    assert [step for step, _ in complete_checkpoints(run)] == [2]  # nothing saved after the bad step
