"""parallel/timeouts.py: which errors count as a collective timeout, and the one line a user sees (the stalled
rank itself is tested in tests/dist/test_kill_resume_dist.py)."""

import pytest

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.parallel.timeouts import explain_collective_timeouts, is_collective_timeout

GLOO = "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 5000ms for recv operation to complete"


@pytest.mark.parametrize("message, expected", [
    (GLOO, True),
    ("Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE) ran for 600000 ms", True),
    ("[x] timed out connecting: SO_ERROR: Connection refused, remote=[127.0.0.1]:56214", False),  # unreachable peer
    ("CUDA out of memory", False),
])
def test_is_collective_timeout(message, expected):
    assert is_collective_timeout(RuntimeError(message)) is expected


def test_a_timeout_on_a_torchrun_rank_becomes_one_line_naming_rank_and_field(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")

    @explain_collective_timeouts
    def train(cfg):
        raise RuntimeError(GLOO)

    with pytest.raises(UserError) as caught:
        train(RunConfig.model_validate({"parallel": {"timeout_s": 5}}))
    assert str(caught.value).startswith(
        "rank 1: a collective with the other ranks did not complete within parallel.timeout_s=5 s (Timed out waiting "
        "5000ms for recv operation to complete)")
    assert "\n" not in str(caught.value)


def test_other_errors_and_single_process_runs_pass_through(monkeypatch):
    @explain_collective_timeouts
    def train(cfg, message):
        raise RuntimeError(message)

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="out of memory"):
        train(RunConfig(), "out of memory")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(RuntimeError, match="Timed out") as caught:
        train(RunConfig(), GLOO)
    assert not isinstance(caught.value, UserError)
