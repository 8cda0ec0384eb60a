"""The trainer's CUDA paths: fp16 with loss scaling, whole-block compile in bf16, deterministic kill -9 and resume,
the process-based async checkpoint writer beside a GPU, and the chunked loss at its GPU chunk size."""

from __future__ import annotations

import json

import pytest
import torch
from train.conftest import debug_config, train_capturing_weights
from train.killing import (
    assert_bitwise_equal_runs,
    kill_and_resume,
    kill_plan,
    make_kill_shards,
    overrides,
    run_to_completion,
    train_command,
)

from megalang.data.shards import read_shard_manifest
from megalang.model.build import build_model, special_ids
from megalang.monitor.metrics import read_metrics
from megalang.store.checkpoints import complete_checkpoints, verify_files
from megalang.store.run_dir import CheckpointFiles
from megalang.train.loss import chunk_rows, cross_entropy, linear_cross_entropy

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]

# Largest relative difference of a low-precision step from the fp32 step: fp16 keeps 11 mantissa bits, bf16 (the
# stand-in on a CPU dry run) 8, so bf16's bounds are 8× wider.
STEP_TOLERANCE = {"fp16": {"loss": 5e-3, "grad_norm": 2e-2, "update": 0.1},
                  "bf16": {"loss": 4e-2, "grad_norm": 0.16, "update": 0.3}}


def initial_weights(cfg, device: str) -> dict[str, torch.Tensor]:
    """The weights the trainer starts from (build_model draws them from a generator on `device`)."""
    manifest = read_shard_manifest(cfg.data.shards)
    model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed, device)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def update_differences(got: dict, want: dict, start: dict) -> dict[str, float]:
    """Per tensor, how far `got` lies from `want` relative to the distance `want` moved from `start`. AdamW moves
    an element by about lr · sign(gradient) whatever the gradient's size, so rounding that flips a tiny gradient's
    sign moves an element a whole step the other way: element-wise tolerances say nothing, this norm does."""
    out = {}
    for name, w0 in start.items():
        moved = (want[name].float() - w0.float()).norm()
        assert moved > 0, f"{name}: the reference run did not change it"
        # A skipped step (an overflow the scaler backed off from) leaves got = start: a relative difference of 1.
        out[name] = ((got[name].float() - want[name].float()).norm() / moved).item()
    return out


def test_one_fp16_step_with_loss_scaling_matches_the_fp32_step(device, gpu_shards, tmp_path):
    """GradScaler path (scale, unscale before clipping, step, update): one optimizer step in fp16 gives the fp32
    step's loss, gradient norm and weight update within fp16 rounding, and the scaler's state is checkpointed."""
    low = "fp16" if device == "cuda" else "bf16"
    steps, weights = {}, {}
    for precision in ("fp32", low):
        cfg = debug_config(gpu_shards, tmp_path / precision, train={"max_steps": 1, "precision": precision,
                                                                    "device": device})
        _, weights[precision] = train_capturing_weights(cfg)
        steps[precision] = read_metrics(tmp_path / precision / "metrics.jsonl")[1]
    start = initial_weights(cfg, device)
    bound = STEP_TOLERANCE[low]
    assert relative(steps[low]["loss"], steps["fp32"]["loss"]) < bound["loss"], steps
    assert relative(steps[low]["grad_norm"], steps["fp32"]["grad_norm"]) < bound["grad_norm"], steps
    differences = update_differences(weights[low], weights["fp32"], start)
    assert max(differences.values()) < bound["update"], differences
    if low == "fp16":
        state = json.loads((complete_checkpoints(tmp_path / low)[-1][1] / CheckpointFiles.TRAINER_STATE).read_text())
        assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] == 1  # one clean step


def test_bf16_compiled_blocks_match_eager(device, gpu_shards, tmp_path):
    """train.compile=true (torch.compile per block) in bf16 gives eager's per-step losses and final weights
    within bf16 rounding: compiled kernels fuse differently, they must not compute something else."""
    losses, weights = {}, {}
    for mode, compile in (("eager", False), ("compiled", True)):
        cfg = debug_config(gpu_shards, tmp_path / mode, train={"max_steps": 6, "precision": "bf16",
                                                                "compile": compile, "device": device})
        _, weights[mode] = train_capturing_weights(cfg)
        losses[mode] = [r["loss"] for _, r in sorted(read_metrics(tmp_path / mode / "metrics.jsonl").items())]
    assert len(losses["compiled"]) == len(losses["eager"]) == 6
    for step, (got, want) in enumerate(zip(losses["compiled"], losses["eager"]), 1):
        assert relative(got, want) < 2e-2, f"step {step}: compiled {got} vs eager {want}"
    differences = update_differences(weights["compiled"], weights["eager"], initial_weights(cfg, device))
    assert max(differences.values()) < 0.1, differences


@pytest.fixture(scope="module")
def kill_shards(tmp_path_factory):
    return make_kill_shards(tmp_path_factory.mktemp("gpu-kill-data"))


def gpu_overrides(device: str) -> list[str]:
    """The kill tests' run (tests/train/killing.py) on this device, bf16, deterministic kernels."""
    return [f"train.device={device}", "train.precision=bf16", "train.deterministic=true"]


def test_kill_9_and_resume_on_cuda_is_bitwise_with_deterministic_algorithms(device, kill_shards, tmp_path):
    """Killed mid accumulation and after an epoch boundary, resumed from checkpoints holding the CUDA RNG state:
    with train.deterministic the per-step losses and final weights are bitwise those of an uninterrupted run."""
    shards, windows = kill_shards
    extra = gpu_overrides(device)
    reference = tmp_path / "uninterrupted"
    run_to_completion(train_command(1, overrides(shards, reference, *extra)))
    plan = kill_plan(windows, accum=4, seed=20261204, randoms=0)
    kill_and_resume(1, shards, tmp_path / "run", plan, extra)
    assert_bitwise_equal_runs(tmp_path / "run", reference)
    if device == "cuda":
        checkpoint = complete_checkpoints(tmp_path / "run")[-1][1]
        rng = json.loads((checkpoint / CheckpointFiles.TRAINER_STATE).read_text())["rng"]
        assert len(rng["cuda"]) == torch.cuda.device_count()


def test_async_saves_by_the_writer_process_beside_the_gpu_change_nothing(device, kill_shards, tmp_path):
    """checkpoint.async_save with the writer process (what `auto` picks beside a GPU) while training: every
    checkpoint is complete and verifies, and the weights are bitwise those of a run saving synchronously."""
    shards, _ = kill_shards
    extra = gpu_overrides(device)
    sync, background = tmp_path / "sync", tmp_path / "async"
    run_to_completion(train_command(1, overrides(shards, sync, *extra)))
    run_to_completion(train_command(1, overrides(shards, background, *extra, "checkpoint.async_save=true",
                                                 "checkpoint.async_writer=process")))
    assert_bitwise_equal_runs(background, sync)
    saved = complete_checkpoints(background)
    assert [step for step, _ in saved] == [8, 10]  # checkpoint.keep=2 of the saves every 2 steps
    for _, folder in saved:
        verify_files(folder)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_chunked_loss_at_the_gpu_chunk_size_equals_the_plain_loss(device, precision):
    """The fused linear + cross-entropy at the chunk size it uses on a GPU (several chunks, a ragged last one,
    ignored labels) gives the plain loss and its gradients."""
    vocab, hidden, tokens = 32_000, 256, 3 * chunk_rows(32_000, "cuda") + 123
    gen = torch.Generator(device=device).manual_seed(0)
    h = torch.randn(tokens, hidden, device=device, generator=gen, requires_grad=True)
    w = (torch.randn(vocab, hidden, device=device, generator=gen) * 0.02).requires_grad_()
    labels = torch.randint(0, vocab, (tokens,), device=device, generator=gen)
    labels[::7] = -100
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    with torch.autocast(device, dtype=dtype, enabled=precision == "bf16"):
        fused = linear_cross_entropy(h, w, labels, rows=chunk_rows(vocab, "cuda"))
        fused_grads = torch.autograd.grad(fused, (h, w))
        plain = cross_entropy((h @ w.T)[None], labels[None])
        plain_grads = torch.autograd.grad(plain, (h, w))
    tol = {"fp32": 1e-5, "bf16": 2e-2}[precision]
    assert relative(fused.item(), plain.item()) < tol
    for got, want in zip(fused_grads, plain_grads):
        assert ((got.float() - want.float()).norm() / want.float().norm()).item() < tol
