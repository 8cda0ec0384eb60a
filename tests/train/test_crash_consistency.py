"""Crash-consistent checkpoints, explicit resume steps and checkpoint integrity (docs/reliability.md, "Checkpoints").

Each kill test runs `python -m megalang train` in a subprocess that MEGALANG_FAULT_SAVE kills with SIGKILL at one
point of a save, checks what the kill left on disk, re-runs the same command and compares the final weights
with an uninterrupted run of that command. 8 debug steps, a checkpoint every 2 steps, keep 1 (so the step-4
save deletes step-2: retention is on the path of every kill).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from megalang.cli import app
from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.model.load import load_trained_model
from megalang.store.checkpoints import complete_checkpoints, find_checkpoint
from megalang.store.run_dir import COMPLETE
from megalang.train.checkpoint import verify_checkpoint
from megalang.train.faults import FAULT_SAVE_ENV, SAVE_POINTS
from megalang.train.trainer import train

STEPS = 8
runner = CliRunner()


def overrides(shards: Path, run: Path, *extra: str) -> list[str]:
    return [
        "model.preset=debug", f"data.shards={shards}", f"run.dir={run}", f"train.max_steps={STEPS}",
        "train.seq_len=32", "train.micro_batch_size=4", "optimizer.lr=3e-3", "schedule.min_lr=3e-4",
        "schedule.warmup_steps=2", "train.log_every=1", "train.eval_batches=2", "train.progress=false",
        "train.device=cpu", "checkpoint.every=2", "checkpoint.keep=1", "seed=7", *extra,
    ]


def train_cli(shards: Path, run: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    """`python -m megalang train …` in a fresh process (one thread: every run computes identically)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAULT_SAVE_ENV, None)
    if fault:
        env[FAULT_SAVE_ENV] = fault
    cmd = [sys.executable, "-m", "megalang", "train", *overrides(shards, run, *extra)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    model, _cfg = load_trained_model(run, step=STEPS)
    return model.state_dict()


def assert_same_weights(run: Path, reference: Path) -> None:
    got, want = final_weights(run), final_weights(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    """The same command, never interrupted."""
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = train_cli(shards, run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def leftover(run: Path, point: str) -> None:
    """What the kill left proves where it struck: the save's tmp folder (or the half-deleted step-2)."""
    tmp = run / "checkpoints" / "step-4.tmp"
    names = {p.name for p in tmp.iterdir()} if tmp.is_dir() else set()
    if point == "before_metadata":
        assert any(n.endswith(".distcp") for n in names) and ".metadata" not in names and COMPLETE not in names
    elif point == "after_shards":
        assert {".metadata", "trainer_state.json"} <= names and COMPLETE not in names
    elif point == "before_rename":
        assert COMPLETE in names and not (run / "checkpoints" / "step-4").exists()
    else:  # during_retention: step-4 complete, step-2 half deleted (marker first, then DCP's metadata)
        assert not tmp.exists() and (run / "checkpoints" / "step-4" / COMPLETE).is_file()
        half = {p.name for p in (run / "checkpoints" / "step-2").iterdir()}
        assert COMPLETE not in half and ".metadata" not in half and "trainer_state.json" in half


@pytest.mark.parametrize(
    "point, extra, resumed_from",
    [
        ("before_metadata", (), 2),
        ("after_shards", (), 2),
        ("before_rename", (), 2),
        ("during_retention", (), 4),
        ("before_metadata", ("checkpoint.async_save=true", "checkpoint.async_writer=process"), 2),  # kills the trainer too
        ("before_metadata", ("checkpoint.async_save=true", "checkpoint.async_writer=thread"), 2),
    ],
    ids=["before_metadata", "after_shards", "before_rename", "during_retention", "async-before_metadata",
         "async_thread-before_metadata"],
)
def test_kill_during_save_resumes_from_last_complete(point, extra, resumed_from, shards, reference, tmp_path):
    run = tmp_path / "run"
    killed = train_cli(shards, run, *extra, fault=f"{point}:4")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    leftover(run, point)
    # Only complete checkpoints are discoverable, and each one still verifies.
    assert [s for s, _ in complete_checkpoints(run)] == [resumed_from]
    assert find_checkpoint(run) == run / "checkpoints" / f"step-{resumed_from}"
    verify_checkpoint(find_checkpoint(run))

    rerun = train_cli(shards, run, *extra)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == resumed_from
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [f"step-{STEPS}"]  # leftovers cleaned
    assert_same_weights(run, reference)


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm tmpfs here")
def test_writer_process_without_room_in_shared_memory_fails_at_setup(shards, tmp_path, monkeypatch):
    """The state a writer process maps is staged in /dev/shm; too little there is one line before step 1, not a
    crash at the first save, and the group of one created for the writer is gone again."""
    import collections

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**20, 2**20, 0))
    with pytest.raises(UserError, match=r"in /dev/shm, which has 0.00 GiB free; .* checkpoint.async_writer=thread"):
        train(in_process(shards, tmp_path / "run", "checkpoint.async_save=true", "checkpoint.async_writer=process"))
    assert not torch.distributed.is_initialized()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_fault_points_are_checked():
    assert SAVE_POINTS == ("before_metadata", "after_shards", "before_rename", "during_retention")
    from megalang.train.faults import FaultPlan

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAULT_SAVE_ENV, "befor_metadata:4")  # a typo must not silently test nothing
        with pytest.raises(ValueError, match="unknown point 'befor_metadata'"):
            FaultPlan.from_env()
        mp.setenv(FAULT_SAVE_ENV, "before_rename:6")
        plan = FaultPlan.from_env()
        plan.at_save("before_rename", 4)  # another step: no kill (the test process survives)
        plan.at_save("after_shards", 6)


# --- promise 2: an explicit resume step ------------------------------------------------------------


def in_process(shards: Path, run: Path, *extra: str) -> RunConfig:
    return load_config(RunConfig, None, overrides(shards, run, "checkpoint.keep=4", "train.max_steps=6", *extra))


@pytest.fixture(scope="module")
def six_steps(shards, tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """6 steps in-process, checkpoints at 2, 4, 6 (all kept)."""
    run = tmp_path_factory.mktemp("six") / "run"
    train(in_process(shards, run))
    model, _ = load_trained_model(run, step=6)
    return run, model.state_dict()


def test_resume_step_resumes_exactly_there(six_steps, shards, tmp_path):
    source, weights = six_steps
    run = tmp_path / "run"
    shutil.copytree(source, run)
    summary = train(in_process(shards, run, "checkpoint.resume_step=2"))
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 6
    assert [s for s, _ in complete_checkpoints(run)] == [2, 4, 6]
    model, _ = load_trained_model(run, step=6)
    for name, tensor in weights.items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    "step, plant, message",
    [
        (5, None, r"checkpoint.resume_step=5: .* complete steps: 2, 4, 6; there is no checkpoints/step-5"),
        (7, "step-7.tmp", r"complete steps: 2, 4, 6; checkpoints/step-7.tmp is a save that never finished"),
        (3, "step-3", r"complete steps: 2, 4, 6; checkpoints/step-3 has no COMPLETE.json"),
    ],
)
def test_resume_step_missing_or_incomplete_is_an_error(six_steps, shards, tmp_path, step, plant, message):
    source, _ = six_steps
    run = tmp_path / "run"
    shutil.copytree(source, run)
    if plant:
        (run / "checkpoints" / plant).mkdir()
        (run / "checkpoints" / plant / "__0_0.distcp").write_bytes(b"partial")
    before = (run / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=message):
        train(in_process(shards, run, f"checkpoint.resume_step={step}"))
    assert (run / "metrics.jsonl").read_text() == before  # nothing trained, nothing overwritten
    assert (run / "summary.json").is_file()


def test_resume_step_in_an_empty_run_dir_is_not_a_fresh_start(shards, tmp_path):
    with pytest.raises(UserError, match="checkpoint.resume_step=2: .* complete steps: none"):
        train(in_process(shards, tmp_path / "run", "checkpoint.resume_step=2"))
    assert not (tmp_path / "run").exists()


def test_resume_step_needs_resume_auto(shards, tmp_path):
    with pytest.raises(UserError, match="checkpoint.resume_step needs checkpoint.resume=auto"):
        in_process(shards, tmp_path / "run", "checkpoint.resume_step=2", "checkpoint.resume=never")


def test_export_step_incomplete_exits_2_naming_it(six_steps, tmp_path):
    source, _ = six_steps
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / "checkpoints" / "step-3").mkdir()
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "hf"), "--step", "3"])
    assert result.exit_code == 2
    assert "--step=3" in result.output and "checkpoints/step-3 has no COMPLETE.json" in result.output
    assert not (tmp_path / "hf").exists()


# --- promise 5 (checkpoints): integrity at load -----------------------------------------------------


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["__0_0.distcp", "trainer_state.json"])
def test_flipped_byte_stops_resume_and_verify(name, reference, shards, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    flip_byte(run / "checkpoints" / f"step-{STEPS}" / name)
    result = runner.invoke(app, ["train", *overrides(shards, run)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert f"step-{STEPS}/{name}: SHA-256 differs" in line and "is corrupt" in line
    assert "checkpoint.resume_step" in line
    assert (run / "manifest.json").is_file()  # refused before the run folder was touched

    verify = runner.invoke(app, ["verify", str(run)])
    assert verify.exit_code == 1 and name in verify.output
    (run / "manifest.json").unlink()  # a run still training has no manifest: the checkpoints are still checked
    verify = runner.invoke(app, ["verify", str(run)])
    assert verify.exit_code == 1 and f"{name}: SHA-256 differs from the one COMPLETE.json records" in verify.output


def test_verify_accepts_an_intact_run(reference):
    assert runner.invoke(app, ["verify", str(reference)]).exit_code == 0


def test_flipped_byte_stops_export(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    flip_byte(run / "checkpoints" / f"step-{STEPS}" / "__0_0.distcp")
    result = runner.invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "hf")])
    assert result.exit_code == 2 and "__0_0.distcp: SHA-256 differs" in result.output
    assert not (tmp_path / "hf").exists()
