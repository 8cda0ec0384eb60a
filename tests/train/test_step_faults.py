"""train/faults.py step hooks (FaultPlan.in_step, the plan read from the environment once): where they fire, for which rank, and only once with a marker (the kills
themselves are exercised by tests/train/test_kill_resume.py and tests/dist/test_kill_resume_dist.py)."""

import pytest

from megalang.train import faults


def test_stall_fires_at_its_step_micro_batch_and_rank_only(monkeypatch):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("MEGALANG_STALL_AT", "3:1:42")
    monkeypatch.setenv("MEGALANG_FAULT_RANK", "1")
    for step, micro, rank in ((3, 1, 0), (3, 0, 1), (2, 1, 1), (3, 1, 1)):
        faults.FaultPlan.from_env().in_step(step, micro, rank)
    assert slept == [42.0]


def test_once_marker_makes_a_fault_fire_a_single_time(monkeypatch, tmp_path):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("MEGALANG_STALL_AT", "1:0:5")
    monkeypatch.setenv("MEGALANG_FAULT_ONCE", str(tmp_path / "fired"))
    faults.FaultPlan.from_env().in_step(1, 0, 0)
    faults.FaultPlan.from_env().in_step(1, 0, 0)  # a restarted process: the marker exists
    assert slept == [5.0] and (tmp_path / "fired").is_file()


def test_kill_sends_sigkill_to_this_process(monkeypatch):
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setenv("MEGALANG_KILL_AT", "4:2")
    faults.FaultPlan.from_env().in_step(4, 1, 0)
    faults.FaultPlan.from_env().in_step(4, 2, 0)
    assert sent == [(faults.os.getpid(), faults.signal.SIGKILL)]


def test_malformed_value_is_an_error(monkeypatch):
    monkeypatch.setenv("MEGALANG_KILL_AT", "4")
    with pytest.raises(ValueError, match="MEGALANG_KILL_AT=4: expected S:k"):
        faults.FaultPlan.from_env()


def test_the_plan_is_read_once_not_at_each_step(monkeypatch):
    """Changing the environment after the plan was read changes nothing: no lookup inside the step."""
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    plan = faults.FaultPlan.from_env({})
    monkeypatch.setenv("MEGALANG_KILL_AT", "1:0")
    plan.in_step(1, 0, 0)
    assert sent == [] and faults.FaultPlan.from_env().kill_at == (1, 0)
