"""Kill-and-rerun harness for the bitwise-resume proofs (issue #4, promises 3 and 7): run `megalang train` (one
process) or `megalang launch --nproc N -- train` (torchrun) in a subprocess, let a fault hook SIGKILL it at a
chosen micro-batch (train/faults.py), rerun the same command, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from megalang.model.load import load_trained_model

MAX_STEPS = 10
GLOBAL_BATCH_SAMPLES = 8  # × 32 tokens: 4 micro-batches of 2 on one process, 2 per rank on two
TIMEOUT = 600  # per command; a run that hangs fails the test instead of the CI job


def overrides(shards: Path, run_dir: Path, *extra: str) -> list[str]:
    """Debug preset with attention dropout (so the RNG state must survive a resume too), checkpoints every 2
    steps, every step logged, no report or system telemetry (they only cost time here)."""
    return [
        "model.preset=debug", "model.dropout=0.1", f"data.shards={shards}", f"run.dir={run_dir}",
        f"train.max_steps={MAX_STEPS}", "train.seq_len=32", "train.micro_batch_size=2",
        f"train.global_batch_tokens={GLOBAL_BATCH_SAMPLES * 32}", "optimizer.lr=3e-3", "schedule.min_lr=3e-4",
        "schedule.warmup_steps=2", "train.log_every=1", "train.eval_batches=2", "train.progress=false",
        "train.device=cpu", "checkpoint.every=2", "checkpoint.keep=2", "metrics.report=false",
        "metrics.system=false", "seed=7", *extra,
    ]


def train_command(nproc: int, args: list[str], launch_flags: tuple[str, ...] = ()) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "megalang", "train", *args]
    return [sys.executable, "-m", "megalang", "launch", "--nproc", str(nproc), *launch_flags, "--", "train", *args]


def run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run `cmd` in a session of its own; on timeout SIGKILL it with every descendant and fail."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}  # ranks share the machine's cores
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(cmd)} still running after {timeout} s:\n{err[-4000:]}") from None
    finally:
        kill_tree(proc.pid)  # nothing of a killed run may live on and write into the run folder
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and all its descendants. torchrun starts each worker in a session of its own, so killing
    torchrun's process group would leave the workers running."""
    for child in descendants(pid):
        with _gone():
            os.kill(child, signal.SIGKILL)
    with _gone():
        os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class _gone:
    """Ignore ProcessLookupError: the process already exited."""

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        return kind is ProcessLookupError


def run_to_completion(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = run(cmd, env)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


def run_killed_at(cmd: list[str], step: int, micro: int, env: dict[str, str] | None = None) -> None:
    """Run `cmd` with MEGALANG_KILL_AT=step:micro and check it died by that SIGKILL (not by finishing or an error)."""
    proc = run(cmd, {**(env or {}), "MEGALANG_KILL_AT": f"{step}:{micro}"})
    # One process: the shell's -9. torchrun: the worker's SIGKILL is its failure (launch exits non-zero).
    assert proc.returncode == -signal.SIGKILL or (cmd[3] == "launch" and proc.returncode != 0), \
        f"kill at {step}:{micro}: exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    if cmd[3] == "launch":
        assert "exitcode: -9" in proc.stderr, proc.stderr[-4000:]  # torchrun's report of the SIGKILLed worker


def metric_lines(run_dir: Path) -> list[dict]:
    """Every complete line of metrics.jsonl, in order (a killed writer may leave a torn last line)."""
    lines = (run_dir / "metrics.jsonl").read_text().split("\n")
    return [json.loads(line) for line in lines[:-1]]


def last_per_step(lines: list[dict]) -> dict[int, dict]:
    records: dict[int, dict] = {}
    for record in lines:
        records[record["step"]] = record
    return records


def assert_bitwise_equal_runs(run_dir: Path, reference: Path) -> None:
    """Per-step losses and grad norms (every line, not only the last per step: a leg that was killed later
    must also have logged the reference's values) and every tensor of the final checkpoint are identical."""
    want = last_per_step(metric_lines(reference))
    lines = metric_lines(run_dir)
    assert sorted(last_per_step(lines)) == sorted(want) == list(range(1, MAX_STEPS + 1))
    for record in lines:
        step = record["step"]
        for key in ("loss", "grad_norm", "lr"):
            assert record[key] == want[step][key], f"step {step} {key}: {record[key]} vs uninterrupted {want[step][key]}"
    assert last_per_step(lines)[MAX_STEPS]["val_loss"] == want[MAX_STEPS]["val_loss"]
    got_model, _ = load_trained_model(run_dir)
    ref_model, _ = load_trained_model(reference)
    got, ref = got_model.state_dict(), ref_model.state_dict()
    assert got.keys() == ref.keys()
    different = [k for k in ref if not torch.equal(got[k], ref[k])]
    assert not different, f"final weights differ from the uninterrupted run: {different}"


def make_kill_shards(root: Path) -> tuple[Path, int]:
    """(shards, train windows of 32 tokens): a train split of a few dozen windows, so 10 steps of 8 samples pass
    more than one epoch, with an odd vocab (67) that no world size > 1 divides, and a window count that is no
    multiple of the global batch, so one step's batch straddles the epoch boundary."""
    from .conftest import make_shards, make_tokenizer

    shards = make_shards(root / "shards", make_tokenizer(root / "tok"), train_docs=20, val_docs=8, vocab=67)
    manifest = json.loads((shards / "manifest.json").read_text())
    windows = (manifest["splits"]["train"]["tokens"] - 1) // 32
    assert 2 * GLOBAL_BATCH_SAMPLES < windows < (MAX_STEPS - 4) * GLOBAL_BATCH_SAMPLES, windows
    assert windows % GLOBAL_BATCH_SAMPLES, windows
    return shards, windows


def kill_plan(windows: int, accum: int, seed: int, randoms: int) -> list[tuple[int, int]]:
    """(step, micro-batch) kill points, in the order one run meets them, each after the previous one's resume
    point: (a) mid gradient accumulation, (b) just after the first epoch boundary, (c) `randoms` seeded ones."""
    import random

    mid_accum = (3, accum // 2)  # the newest checkpoint is step 2; `accum // 2` micro-batches already added up
    boundary = windows // GLOBAL_BATCH_SAMPLES + 1  # the step whose batch holds the first sample of epoch 1
    plan = [mid_accum, (boundary + 1, accum - 1)]
    rng = random.Random(seed)
    steps = sorted(rng.sample(range(plan[-1][0] + 1, MAX_STEPS + 1), randoms))
    return plan + [(step, rng.randrange(accum)) for step in steps]


def expected_steps(plan: list[tuple[int, int]], every: int = 2) -> list[int]:
    """The steps metrics.jsonl logs, in order, over the killed legs and the final one: each leg starts after
    the newest checkpoint the previous one completed and dies before logging its kill step."""
    steps, resumed = [], 0
    for step, _micro in plan:
        steps += range(resumed + 1, step)
        resumed = (step - 1) // every * every
    return steps + list(range(resumed + 1, MAX_STEPS + 1))


def kill_and_resume(nproc: int, shards: Path, run_dir: Path, plan: list[tuple[int, int]],
                    extra: list[str] | tuple[str, ...] = ()) -> None:
    """Run the same command once per kill point (each killed there by SIGKILL), then once to the end; `extra`
    overrides come after the defaults (e.g. train.device=cuda)."""
    cmd = train_command(nproc, overrides(shards, run_dir, *extra))
    for step, micro in plan:
        run_killed_at(cmd, step, micro)
    run_to_completion(cmd)
