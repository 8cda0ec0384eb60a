"""ray_launch.py: the trainer as 2 Ray Train workers on this machine (a local Ray, gloo) with one worker
killed mid-run and restarted from the newest checkpoint; the worker's error path; the `launcher=ray` config/CLI.

The Ray run starts a local Ray (~10 s), then two worker groups (~15 s each on 2 cores): about a minute. It is
one run on purpose: a run with a failure also shows everything an uneventful run must (it finishes, writes the
run folder once, matches one process), at half the time of two runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from typer.testing import CliRunner

from dist.conftest import STEPS, assert_losses_match, common_overrides, metrics
from megalang import ray_launch
from megalang.cli import app
from megalang.cli.artifacts import verify
from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.ray_launch import (
    KILL_ENV,
    kill_request,
    maybe_arm_kill,
    run_worker,
    summary_from,
    train_on_ray,
    with_absolute_paths,
)
from megalang.train.faults import STOP_AT_ENV as FAULT_ENV

ALL_STEPS = range(1, STEPS + 1)


def ray_config(shards: Path, run_dir: Path, *overrides: str) -> RunConfig:
    """The tests/dist run (8 debug steps, checkpoints at 4 and 8) on 2 Ray workers in a 2-CPU local Ray,
    with the default parallel layout (2 ranks: FSDP2, dp_shard=2)."""
    return load_config(RunConfig, None, [*common_overrides(shards, run_dir), "launcher=ray", "workers=2",
                                         "ray.num_cpus=2", "ray.max_failures=2", *overrides])


def metric_steps(run_dir: Path) -> list[int]:
    """Every logged line's step, in file order (a restarted run logs some steps twice)."""
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- a Ray run (slow) -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.timeout(600)
def test_ray_run_survives_a_killed_worker_and_matches_one_process(dist_shards, single_run, tmp_path, monkeypatch):
    assert not ray.is_initialized()
    run = tmp_path / "run"
    monkeypatch.setenv(KILL_ENV, "1:6")  # rank 1's process exits hard after step 6; the newest checkpoint is 4
    summary = train_on_ray(ray_config(dist_shards, run))
    assert not ray.is_initialized()  # the local Ray it started is shut down again

    # Killed once, restarted by FailureConfig, resumed from step 4 (not from scratch), finished.
    assert (run / "ray" / "killed-rank1-step6").is_file()
    assert summary["resumed_from_step"] == 4 and summary["steps"] == STEPS
    # Only rank 0 writes metrics, one line per step: 1–6 before the kill, then 5–8 after the resume.
    assert metric_steps(run) == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
    # The two workers are one data-parallel job (not two replicas), and the resumed steps continue the
    # uninterrupted trajectory: every step's loss is the single process's.
    assert_losses_match(metrics(run), metrics(single_run), ALL_STEPS)
    derived = json.loads((run / "checkpoints" / f"step-{STEPS}" / "run_config.json").read_text())["derived"]
    assert derived["world_size"] == 2 and derived["parallel"]["dp_shard"] == 2

    # The usual run folder; rank 0's summary comes back through Ray and is the one it wrote.
    assert summary == json.loads((run / "summary.json").read_text())
    assert {"checkpoints", "config.yaml", "manifest.json", "metrics.jsonl", "summary.json", "tokenizer",
            "ray"} <= {p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-8"]
    assert verify(run) == []
    assert load_config(RunConfig, run / "config.yaml").launcher == "ray"  # re-running it re-launches on Ray


# --- the worker's side, without Ray -----------------------------------------------------------------


def test_a_worker_returns_a_user_error_instead_of_raising_it(dist_shards, tmp_path):
    """Raised, Ray would restart the group ray.max_failures times on a config that can never work."""
    missing = tmp_path / "no-such-shards"
    cfg = ray_config(dist_shards, tmp_path / "run", f"data.shards={missing}")
    result = run_worker(cfg, rank=0)
    assert list(result) == ["user_error"] and str(missing) in result["user_error"]
    with pytest.raises(UserError, match="no-such-shards"):
        summary_from(SimpleNamespace(return_value=result))
    assert summary_from(SimpleNamespace(return_value={"summary": {"steps": 3}})) == {"steps": 3}


def test_the_kill_hook_arms_only_the_chosen_rank_and_only_once(tmp_path, monkeypatch):
    monkeypatch.delenv(FAULT_ENV, raising=False)
    request = {"rank": 1, "step": 6, "marker": str(tmp_path / "killed")}
    assert maybe_arm_kill(None, 1) is None and maybe_arm_kill(request, 0) is None
    assert FAULT_ENV not in os.environ
    assert maybe_arm_kill(request, 1) == tmp_path / "killed"
    assert os.environ[FAULT_ENV] == "6"
    monkeypatch.delenv(FAULT_ENV)
    (tmp_path / "killed").touch()  # it died once: the restarted worker runs through
    assert maybe_arm_kill(request, 1) is None and FAULT_ENV not in os.environ


# --- config and CLI (fast, no Ray started) ----------------------------------------------------------


def test_launcher_keys_parse_from_overrides():
    cfg = load_config(RunConfig, None, ["launcher=ray", "workers=4", "ray.address=auto", "ray.max_failures=-1",
                                        "ray.cpus_per_worker=8"])
    assert (cfg.launcher, cfg.workers, cfg.ray.address, cfg.ray.max_failures, cfg.ray.cpus_per_worker) == \
        ("ray", 4, "auto", -1, 8.0)
    defaults = RunConfig()
    assert (defaults.launcher, defaults.workers, defaults.ray.address) == ("local", 1, None)


def test_workers_without_launcher_ray_is_refused():
    with pytest.raises(UserError, match="workers=2 needs launcher=ray"):
        load_config(RunConfig, None, ["workers=2"])
    with pytest.raises(UserError, match="launcher"):
        load_config(RunConfig, None, ["launcher=slurm"])


def test_paths_are_made_absolute_for_the_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = with_absolute_paths(load_config(RunConfig, None, ["launcher=ray", "run.dir=runs/a", "data.shards=shards"]))
    assert cfg.run.dir == str(tmp_path / "runs" / "a") and cfg.data.shards == str(tmp_path / "shards")
    remote = with_absolute_paths(load_config(RunConfig, None, ["data.shards=s3://bucket/shards"]))
    assert remote.data.shards == "s3://bucket/shards"


def test_kill_request_reads_rank_and_step(tmp_path, monkeypatch):
    monkeypatch.delenv(KILL_ENV, raising=False)
    assert kill_request(tmp_path) is None
    monkeypatch.setenv(KILL_ENV, "1:6")
    assert kill_request(tmp_path) == {"rank": 1, "step": 6, "marker": str(tmp_path / "ray" / "killed-rank1-step6")}
    for bad in ("6", "a:b", "1:0", "1:"):
        monkeypatch.setenv(KILL_ENV, bad)
        with pytest.raises(UserError, match=KILL_ENV):
            kill_request(tmp_path)


def test_cli_train_with_launcher_ray_goes_through_ray_train(monkeypatch):
    seen = []
    monkeypatch.setattr(ray_launch, "train_on_ray", lambda cfg: seen.append(cfg) or {"steps": 3})
    result = CliRunner().invoke(app, ["train", "launcher=ray", "workers=2", "train.max_steps=3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"steps": 3}
    assert [(c.launcher, c.workers, c.train.max_steps) for c in seen] == [("ray", 2, 3)]


def test_launcher_ray_refuses_to_run_under_torchrun(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets in each of its processes
    with pytest.raises(UserError, match="not under torchrun"):
        train_on_ray(load_config(RunConfig, None, ["launcher=ray", "workers=2", f"run.dir={tmp_path}"]))
    assert not ray.is_initialized()


def test_used_up_restarts_become_one_line_naming_each_failed_rank(tmp_path):
    from ray.train import WorkerGroupError

    failures = {1: RuntimeError("The actor is dead.\nWorker exit type: SYSTEM_ERROR"),
                0: RuntimeError("Traceback ...\n  File x\nConnection reset by peer")}

    class FailingTrainer:
        def fit(self):
            raise WorkerGroupError("both ranks failed", failures)

    cfg = load_config(RunConfig, None, ["launcher=ray", "workers=2", "ray.max_failures=0", f"run.dir={tmp_path}"])
    with pytest.raises(UserError) as caught:
        ray_launch.fit(FailingTrainer(), cfg)
    message = str(caught.value)
    assert "\n" not in message and "ray.max_failures=0" in message and str(tmp_path) in message
    assert "rank 0: RuntimeError: Connection reset by peer; rank 1: RuntimeError: Worker exit type: SYSTEM_ERROR" \
        in message


def test_an_unreachable_cluster_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config(RunConfig, None, ["launcher=ray", "workers=2", "ray.address=auto", f"run.dir={tmp_path}"])
    with pytest.raises(UserError, match="ray.address=auto: cannot connect"):
        train_on_ray(cfg)  # no `ray start` cluster runs on this machine
    assert not ray.is_initialized()
