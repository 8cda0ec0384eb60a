"""bench/: the GPU-only benches skip cleanly without CUDA (so `make bench` runs the rest), gpu_train.py's code paths
run end to end on a CPU, and the throughput benches leave the same warm-up steps out for every contender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
GPU_ONLY = ["gpu_train.py", "qlora_gpu.py"]


def run_bench(name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_gpu_only_benches_are_the_ones_that_need_cuda():
    """A new bench that checks for CUDA must skip like the others (and be listed here)."""
    needs_cuda = sorted(p.name for p in BENCH.glob("[!_]*.py") if "skip_without_cuda(" in p.read_text())
    assert needs_cuda == GPU_ONLY


@pytest.mark.parametrize("name", GPU_ONLY)
def test_gpu_only_bench_without_cuda_prints_a_skipped_line_and_exits_0(name):
    result = run_bench(name)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"bench": name[:-3], "skipped": "no CUDA device"}


@pytest.mark.slow
def test_gpu_train_runs_its_code_paths_on_a_cpu():
    """--allow-cpu on the debug preset: both contenders train twice in turn, both steady rates and the held-out
    equal-work check are reported (and pass: the same weights, batches and schedule)."""
    result = run_bench("gpu_train.py", "--allow-cpu", "--preset", "debug", "--seq-len", "64", "--micro-batch", "2",
                       "--steps", "8", "--no-compile", "--repeats", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and out["warmup_steps"] == 5
    for name in ("megalang", "hf_trainer"):
        assert len(out[f"{name}_runs_tokens_per_s"]) == 2 and out[f"{name}_tokens_per_s"] > 0
    assert set(out["held_out_loss"]) == {"megalang", "hf_trainer"}
    assert out["losses_agree"] and out["held_out_loss_spread"] <= out["held_out_loss_tolerance"]


def test_megalang_steady_rate_leaves_out_the_same_warm_up_steps_as_the_peers(tmp_path, monkeypatch):
    """Logged every 5 steps: steps 1–5 (a slow first interval included) are left out, as `steady_rate` leaves
    out the peers' first 5 stamps."""
    monkeypatch.syspath_prepend(str(BENCH))
    from _train_compare import WARMUP, megalang_steady_rate, steady_rate

    tokens = 100
    # step: tokens/s of the interval ending there; steps 1 and 2-5 slow, 6-10 and 11-15 at 1,000 and 500 tokens/s
    logged = {1: 10.0, 5: 50.0, 10: 1000.0, 15: 500.0}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "tokens_per_s": r}) + "\n"
                                                    for s, r in logged.items()))
    # 10 steps after the warm-up: 5 at 0.1 s and 5 at 0.2 s
    assert megalang_steady_rate(tmp_path, tokens) == pytest.approx(10 * tokens / 1.5)
    stamps = [0.0, 10.0, 12.0, 14.0, 16.0, 18.0] + [18.0 + 0.1 * k for k in range(1, 6)] + \
             [18.5 + 0.2 * k for k in range(1, 6)]
    assert WARMUP == 5 and steady_rate(stamps, tokens) == pytest.approx(10 * tokens / 1.5)


def test_equal_loss_tolerances_are_the_ones_the_docs_state(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from _train_compare import LOSS_TOLERANCE, losses_agree

    text = (BENCH.parent / "docs" / "benchmarks.md").read_text()
    assert f"allows {LOSS_TOLERANCE['fp32'] * 100:g} % in fp32 and {LOSS_TOLERANCE['bf16'] * 100:g} % in bf16" in text
    # the bf16 spread docs/benchmarks.md reports (6.7576 vs 6.7562) passes, twice that does not
    assert losses_agree({"megalang": 6.7576, "hf_trainer": 6.7562}, "bf16")["losses_agree"]
    assert not losses_agree({"megalang": 6.7590, "hf_trainer": 6.7562}, "bf16")["losses_agree"]


@pytest.mark.slow
def test_time_to_loss_reports_every_contender_against_the_seed_recipes_final_loss():
    """The debug preset for a few steps: the target is the seed recipe's last held-out loss, which it reaches at
    its last step by definition; every contender reports its curve, final loss and (reached or not) the tokens and
    seconds to the target."""
    result = run_bench("time_to_loss.py", "--preset", "debug", "--seeds", "1,2", "--steps", "6", "--eval-every", "2",
                       "--eval-batches", "1", "--best-fraction", "0.6")  # 7 best steps: the last one is off the grid
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["best_steps"] == 7 and out["best_settings"]["train"]["micro_batch_size"] == 8  # 0.6 of the tokens
    assert set(out["runs"]) == {"1", "2"}
    for run in out["runs"].values():
        seed = run["seed"]
        assert run["target_loss"] == seed["final_loss"] and seed["tokens_to_target"] == seed["tokens"] == 6 * 16 * 256
        assert [s for s, _ in seed["curve"]] == [2, 4, 6] and [s for s, _ in run["best"]["curve"]] == [2, 4, 6, 7]
        for name in ("best", "hf"):
            reached = run[name]["tokens_to_target"]
            assert reached is None or min(v for _, v in run[name]["curve"]) <= run["target_loss"]
    assert run["seed"]["curve"] != run["hf"]["curve"]  # HF Trainer's own AdamW and schedule, not megalang's
