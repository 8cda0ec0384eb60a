"""Numerical health (docs/reliability.md, promise 6): planted NaN/Inf and loss spikes through MEGALANG_FAULT_LOSS
(train/faults.py) on one process; the 2-rank agreement is in tests/dist/test_health_dist.py."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from megalang.cli import app
from megalang.store.checkpoints import complete_checkpoints
from megalang.model.load import load_trained_model
from megalang.train.faults import FAULT_LOSS_ENV, FaultPlan
from megalang.train.health import HealthGuard, NumericalError

from .conftest import debug_config, train_capturing_weights


def run(shards, tmp_path, name, fault=None, steps=6, every=0, **train_cfg):
    cfg = debug_config(shards, tmp_path / name, train={"max_steps": steps, **train_cfg}, checkpoint={"every": every})
    return train_capturing_weights(cfg, env={FAULT_LOSS_ENV: fault} if fault else None)


def metrics(run_dir):
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def test_spike_guard_flags_only_upward_outliers_over_a_full_window():
    guard = HealthGuard(spike_zscore=3.0, spike_window=4)
    for loss in (4.0, 3.9, 4.1):
        guard.accept(loss)
    assert not guard.is_spike(100.0)  # the window is not full yet
    guard.accept(4.0)
    assert guard.is_spike(4.5) and not guard.is_spike(4.1) and not guard.is_spike(0.5)
    guard.accept(3.0)
    assert guard.recent == [3.9, 4.1, 4.0, 3.0]  # the window slides


def test_fault_spec_is_validated():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAULT_LOSS_ENV, "nan:3:1,spike:5")
        plan = FaultPlan.from_env()
        assert plan.loss_kinds(3, 1) == {"nan"} and plan.loss_kinds(3, 0) == set() and plan.loss_kinds(5, 0) == {"spike"}
        mp.setenv(FAULT_LOSS_ENV, "nun:3")
        with pytest.raises(ValueError, match="nun:3"):
            FaultPlan.from_env()


def test_nonfinite_gradients_are_skipped_counted_and_never_reach_the_weights(shards, tmp_path):
    summary, weights = run(shards, tmp_path, "skip", fault="nangrad:3")
    assert summary["skipped_steps"] == 1 and summary["skipped_at"] == [3] and summary["spike_skipped_steps"] == 0
    assert all(torch.isfinite(w).all() for w in weights.values())
    records = metrics(tmp_path / "skip")
    assert records[3]["skipped_steps"] == 1
    assert records[2]["skipped_steps"] == 0 and math.isfinite(records[6]["loss"])


def test_skip_drops_the_update_but_advances_data_and_schedule(shards, tmp_path):
    """The skipped step's checkpoint holds the previous step's weights, while the loader and the LR schedule are
    where an unskipped run has them: the batch is consumed once, never retried."""
    cfg = dict(train={"max_steps": 4}, checkpoint={"every": 1, "keep": 4})
    train_capturing_weights(debug_config(shards, tmp_path / "skip", **cfg), env={FAULT_LOSS_ENV: "nan:3"})
    train_capturing_weights(debug_config(shards, tmp_path / "plain", **cfg))
    weights = {step: load_trained_model(tmp_path / "skip", step)[0].state_dict() for step in (2, 3)}
    assert all(torch.equal(weights[2][k], weights[3][k]) for k in weights[2])
    state = {name: json.loads((tmp_path / name / "checkpoints/step-4/trainer_state.json").read_text())
             for name in ("skip", "plain")}
    assert state["skip"]["loader"] == state["plain"]["loader"]
    assert state["skip"]["scheduler"] == state["plain"]["scheduler"]
    assert state["skip"]["health"]["skipped_at"] == [3] and state["plain"]["health"]["skipped"] == 0


def test_stop_policy_exits_2_naming_rank_and_step_and_saves_nothing_bad(shards, tmp_path):
    run_dir = tmp_path / "stop"
    args = ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={run_dir}", "train.max_steps=6",
            "train.seq_len=32", "train.micro_batch_size=4", "train.progress=false", "train.device=cpu",
            "health.nonfinite=stop", "checkpoint.every=2"]
    result = CliRunner().invoke(app, args, env={FAULT_LOSS_ENV: "inf:3"})
    assert result.exit_code == 2, result.output
    assert "step 3: non-finite loss on rank 0 (health.nonfinite=stop)" in " ".join(result.output.split())
    assert [step for step, _ in complete_checkpoints(run_dir)] == [2]
    assert not (run_dir / "summary.json").exists()


def test_k_skipped_steps_in_a_row_are_allowed_and_the_next_one_stops(shards, tmp_path):
    summary, _ = run(shards, tmp_path, "two-bad", fault="nan:3,nan:4", max_skipped_steps=2)
    assert summary["skipped_at"] == [3, 4]
    with pytest.raises(NumericalError, match=r"step 5: non-finite loss on rank 0; 3 bad steps in a row"):
        run(shards, tmp_path, "three-bad", fault="nan:3,nan:4,nan:5", max_skipped_steps=2, every=2)
    assert [step for step, _ in complete_checkpoints(tmp_path / "three-bad")] == [2, 4]  # step 4: weights of step 2


def test_planted_spike_is_skipped_and_a_resume_makes_the_same_decisions(shards, tmp_path):
    spike = dict(spike_zscore=20.0, spike_window=3)
    summary, weights = run(shards, tmp_path, "spike", fault="spike:7", steps=10, every=4, **spike)
    assert summary["spike_skipped_steps"] == 1 and summary["skipped_at"] == [7] and summary["skipped_steps"] == 0
    # Killed after step 6 (newest checkpoint: 4) and re-run: the window restored from step 4 still sees the spike.
    cfg = debug_config(shards, tmp_path / "spike-resumed", train={"max_steps": 10, **spike}, checkpoint={"every": 4})
    with pytest.raises(SystemExit):
        train_capturing_weights(cfg, env={FAULT_LOSS_ENV: "spike:7", "MEGALANG_FAULT_AT_STEP": "6"})
    resumed, again = train_capturing_weights(cfg, env={FAULT_LOSS_ENV: "spike:7"})
    assert resumed["resumed_from_step"] == 4 and resumed["skipped_at"] == [7]
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_off_means_no_check(shards, tmp_path):
    summary, _ = run(shards, tmp_path, "off", fault="nan:2", steps=2, nonfinite="off")
    assert "skipped_steps" not in summary
