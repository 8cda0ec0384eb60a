"""Promise 3 (issue #4), one process: `kill -9` a training subprocess mid gradient accumulation, just after an
epoch boundary and at seeded-random micro-batches, rerun the same command each time: the per-step losses and
the final weights are bitwise those of an uninterrupted run (tests/dist/test_kill_resume_dist.py: 2-rank FSDP2)."""

from __future__ import annotations

import json

import pytest

from .killing import (
    GLOBAL_BATCH_SAMPLES,
    assert_bitwise_equal_runs,
    expected_steps,
    kill_and_resume,
    kill_plan,
    make_kill_shards,
    metric_lines,
    overrides,
    run_to_completion,
    train_command,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ACCUM = GLOBAL_BATCH_SAMPLES // 2  # micro-batches of 2 samples on one process


@pytest.fixture(scope="module")
def kill_shards(tmp_path_factory):
    return make_kill_shards(tmp_path_factory.mktemp("kill-data"))


@pytest.fixture(scope="module")
def uninterrupted(kill_shards, tmp_path_factory):
    shards, _ = kill_shards
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run_to_completion(train_command(1, overrides(shards, run_dir)))
    return run_dir


def test_kill_9_mid_accumulation_across_an_epoch_and_at_random_steps_resumes_bitwise(kill_shards, uninterrupted,
                                                                                     tmp_path):
    shards, windows = kill_shards
    plan = kill_plan(windows, ACCUM, seed=20261128, randoms=2)
    kill_and_resume(1, shards, tmp_path / "run", plan)
    assert [r["step"] for r in metric_lines(tmp_path / "run")] == expected_steps(plan)
    assert_bitwise_equal_runs(tmp_path / "run", uninterrupted)
    epochs = [r["epoch"] for r in metric_lines(uninterrupted)]
    assert epochs[-1] > 1  # the run passed more than one epoch boundary
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["resumed_from_step"] == (plan[-1][0] - 1) // 2 * 2
