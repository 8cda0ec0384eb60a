"""train/faults.py step hooks: where they fire, for which rank, and only once with a marker (the kills
themselves are exercised by tests/train/test_kill_resume.py and tests/dist/test_kill_resume_dist.py)."""

import pytest

from megalang.train import faults


def test_stall_fires_at_its_step_micro_batch_and_rank_only(monkeypatch):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("MEGALANG_STALL_AT", "3:1:42")
    monkeypatch.setenv("MEGALANG_FAULT_RANK", "1")
    for step, micro, rank in ((3, 1, 0), (3, 0, 1), (2, 1, 1), (3, 1, 1)):
        faults.maybe_step_fault(step, micro, rank)
    assert slept == [42.0]


def test_once_marker_makes_a_fault_fire_a_single_time(monkeypatch, tmp_path):
    slept = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("MEGALANG_STALL_AT", "1:0:5")
    monkeypatch.setenv("MEGALANG_FAULT_ONCE", str(tmp_path / "fired"))
    faults.maybe_step_fault(1, 0, 0)
    faults.maybe_step_fault(1, 0, 0)  # a restarted process: the marker exists
    assert slept == [5.0] and (tmp_path / "fired").is_file()


def test_kill_sends_sigkill_to_this_process(monkeypatch):
    sent = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setenv("MEGALANG_KILL_AT", "4:2")
    faults.maybe_step_fault(4, 1, 0)
    faults.maybe_step_fault(4, 2, 0)
    assert sent == [(faults.os.getpid(), faults.signal.SIGKILL)]


def test_malformed_value_is_an_error(monkeypatch):
    monkeypatch.setenv("MEGALANG_KILL_AT", "4")
    with pytest.raises(ValueError, match="MEGALANG_KILL_AT=4: expected S:k"):
        faults.maybe_step_fault(4, 0, 0)
