"""The fixed reference runs a refactoring must leave unchanged, and their comparison.

    python tools/reference_runs.py run OUT        # debug preset, 30 steps, fp32: one process, and FSDP2 on 2 ranks
    python tools/reference_runs.py compare A B    # metrics.jsonl of both, timing and host fields left out

Run it on the commit before a change and on the commit after (e.g. from a `git worktree` of the old commit, with
PYTHONPATH pointing at its src/), then compare: issue #16's reshaping printed "identical" for both runs. The
shards are the tests' synthetic counting sequences (tests/train/conftest.py), made once under OUT/data. The
overrides use the pre-#16 key names (train.lr, …), which both old and new commits read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMING = {"tokens_per_s", "mfu", "step_time", "data_wait_s", "checkpoint_s", "time", "cpu_percent", "rss_bytes",
          "peak_memory_bytes"}  # wall-clock and host-dependent values; everything else must be equal
OVERRIDES = ["model.preset=debug", "train.max_steps=30", "train.seq_len=32", "train.micro_batch_size=4",
             "train.global_batch_tokens=256", "train.lr=3e-3", "train.min_lr=3e-4", "train.warmup_steps=2",
             "train.log_every=1", "train.eval_batches=2", "train.eval_every=10", "train.progress=false",
             "train.device=cpu", "checkpoint.every=10", "checkpoint.keep=2", "seed=7", "train.precision=fp32"]
LAUNCHERS = {"single": [], "fsdp": ["launch", "--nproc", "2", "--"]}


def run(out: Path) -> None:
    sys.path[:0] = [str(REPO / "tests"), str(REPO / "src")]
    from train.conftest import make_shards, make_tokenizer

    data = out / "data"
    if not (data / "shards").exists():
        make_shards(data / "shards", make_tokenizer(data / "tok"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    for name, launcher in LAUNCHERS.items():
        cmd = [sys.executable, "-m", "megalang", *launcher, "train", *OVERRIDES, f"data.shards={data / 'shards'}",
               f"run.dir={out / name}"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")


def records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in path.read_text().splitlines()]


def compare(a: Path, b: Path) -> bool:
    same = True
    for name in LAUNCHERS:
        left, right = records(a / name / "metrics.jsonl"), records(b / name / "metrics.jsonl")
        diff = next((i for i, (x, y) in enumerate(zip(left, right)) if x != y), None)
        equal = len(left) == len(right) and diff is None
        print(f"{name}: {'identical' if equal else 'DIFFERENT'} ({len(left)} vs {len(right)} records"
              + (f", first difference at record {diff}" if diff is not None else "") + ")")
        same &= equal
    return same


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]).resolve())
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(0 if compare(Path(sys.argv[2]), Path(sys.argv[3])) else 1)
    else:
        sys.exit(__doc__)
