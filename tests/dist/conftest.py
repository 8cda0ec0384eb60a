"""Multi-process runs for tests/dist: the trainer on 2–4 CPU ranks (gloo) through `megalang launch` (torchrun),
against the same run on one process. Every run uses the debug preset, 8 steps, and a global batch of
8 samples × 32 tokens (one process: 2 micro-batches of 4; two data ranks: 1 each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megalang.config import RunConfig, load_config
from train.conftest import make_shards, make_tokenizer

STEPS = 8
LAUNCH_TIMEOUT = 600


def common_overrides(shards: Path, run_dir: Path) -> list[str]:
    return [
        "model.preset=debug", f"data.shards={shards}", f"run.dir={run_dir}", f"train.max_steps={STEPS}",
        "train.seq_len=32", "train.micro_batch_size=4", "train.global_batch_tokens=256", "optimizer.lr=3e-3",
        "schedule.min_lr=3e-4", "schedule.warmup_steps=2", "train.log_every=1", "train.eval_batches=2",
        "train.progress=false", "train.device=cpu", "checkpoint.every=4", "checkpoint.keep=2", "seed=7",
    ]


def launch_train(nproc: int, shards: Path, run_dir: Path, *overrides: str) -> None:
    """`megalang launch --nproc N -- train …` in a subprocess (torchrun spawns the ranks); fail with its log."""
    cmd = [sys.executable, "-m", "megalang", "launch", "--nproc", str(nproc), "--", "train",
           *common_overrides(shards, run_dir), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2–4 ranks share the machine's cores
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"


def train_here(shards: Path, run_dir: Path, *overrides: str) -> dict:
    """The same run on this (single) process."""
    from megalang.train.trainer import train

    return train(load_config(RunConfig, None, [*common_overrides(shards, run_dir), *overrides]))


def metrics(run_dir: Path) -> dict[int, dict]:
    """step → record; a resumed run's later record of a step wins, as in read_metrics."""
    records = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record
    return records


def copy_until(run_dir: Path, dest: Path, step: int) -> Path:
    """A copy of a finished run cut back to its checkpoint at `step`: later checkpoints removed, metrics.jsonl
    trimmed to the steps up to it and no summary or manifest, so every later record must come from the resumed
    run (a resumed run that stopped logging would otherwise pass on the original's lines)."""
    shutil.copytree(run_dir, dest)
    for path in (dest / "checkpoints").iterdir():
        if int(path.name.split("-")[1]) > step:
            shutil.rmtree(path)
    lines = (dest / "metrics.jsonl").read_text().splitlines(keepends=True)
    (dest / "metrics.jsonl").write_text("".join(line for line in lines if json.loads(line)["step"] <= step))
    for name in ("summary.json", "manifest.json"):
        (dest / name).unlink(missing_ok=True)
    return dest


def assert_losses_match(run: dict[int, dict], reference: dict[int, dict], steps, rel: float = 1e-4) -> None:
    for step in steps:
        assert step in run, f"step {step} was not logged (logged: {sorted(run)})"
        got, want = run[step]["loss"], reference[step]["loss"]
        assert abs(got - want) <= rel * abs(want), f"step {step}: loss {got} vs single process {want}"


@pytest.fixture(scope="session")
def dist_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dist-data")
    return make_shards(root / "shards", make_tokenizer(root / "tok"))


@pytest.fixture(scope="session")
def single_run(dist_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("single") / "run"
    train_here(dist_shards, run)
    return run


@pytest.fixture(scope="session")
def fsdp_run(dist_shards, tmp_path_factory) -> Path:
    """FSDP2 over 2 ranks (dp_shard=2, the default for 2 processes), checkpoints at steps 4 and 8."""
    run = tmp_path_factory.mktemp("fsdp") / "run"
    launch_train(2, dist_shards, run)
    return run
