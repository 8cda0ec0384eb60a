"""plan.py against hand-computed cases: a Llama-2-7B shape on 8×H100 with FSDP, with and without activation
checkpointing; DDP/ZeRO/TP/PP arithmetic; the 100B recipe's verdict; the CLI's --json and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from megalang.config import PlanConfig
from megalang.errors import UserError
from megalang.model.presets import count_params
from megalang.plan import memory_per_gpu, newton_schulz_flops, parse_count, plan, resolve_shape, shape_for_params

ROOT = Path(__file__).resolve().parents[1]
# Llama 2 7B: 6,738,415,616 parameters.
LLAMA2_7B = dict(hidden_size=4096, num_layers=32, intermediate_size=11008, num_heads=32, num_kv_heads=32, vocab_size=32000)
N = 6_738_415_616
BLOCK = 4 * 4096**2 + 3 * 4096 * 11008 + 2 * 4096  # 202,383,360 parameters per decoder block


def seven_b(**kw) -> PlanConfig:
    base = dict(shape=LLAMA2_7B, tokens=1e12, seq_len=2048, global_batch_tokens=1 << 20, micro_batch_size=1,
                gpu="h100", gpus=8, sharding="zero3", precision="bf16", mfu=0.4)
    return PlanConfig(**{**base, **kw})


def test_7b_shape_and_flops_match_hand_counts():
    r = plan(seven_b())
    assert r["model"]["params"] == N
    # PaLM: 6·(matmul params) + 12·L·H·Q·T; matmul params exclude the input embedding and the norm gains.
    per_token = 6 * (32 * (BLOCK - 2 * 4096) + 32000 * 4096) + 12 * 32 * 32 * 128 * 2048
    assert r["flops_per_token"] == per_token == 42_863_689_728
    assert r["total_flops"] == pytest.approx(per_token * 1e12)
    assert r["days"] == pytest.approx(per_token * 1e12 / (8 * 989e12 * 0.4) / 86400)  # ≈ 156.8 days
    assert r["days"] == pytest.approx(156.76, abs=0.01)
    assert r["parallel"] == {"dp": 8, "tp": 1, "pp": 1, "sharding": "zero3", "grad_accum": 64}


def test_7b_fsdp_on_8_h100_without_activation_checkpointing():
    m = plan(seven_b(fused_loss=False))["memory"]  # the plain logits + cross-entropy head
    assert m["parameters"] == 4 * N / 8 and m["gradients"] == 4 * N / 8 and m["optimizer"] == 8 * N / 8
    assert m["buffers"] == 8 * BLOCK  # two bf16 blocks gathered (2·2 bytes) + one fp32 block gradient (4 bytes)
    per_layer = (8 * 4096 + 4 * 11008 + 2 * 4096 + 32 + 2) * 2048 * 2  # 348,266,496 bytes, bf16
    head = 32000 * 2048 * (2 + 4 + 4 + 8) + 3 * 4096 * 2048 * 2
    assert m["activations"] == 32 * per_layer + head == 12_374_507_520
    # 64 micro-batches per step: gradients from earlier micro-batches are alive at the end of each forward.
    assert m["peak_at"] == "forward_end"
    assert m["total"] == 16 * N / 8 + 8 * BLOCK + 12_374_507_520 == 27_470_405_632


def test_7b_chunked_loss_keeps_one_chunk_of_logits_and_the_head_gradients():
    plain = plan(seven_b(fused_loss=False))["memory"]["activations"]
    fused = plan(seven_b())["memory"]["activations"]
    # GPU chunk: 2^26 logits / 32000 = 2097 rows ≥ the 2048 tokens, so one chunk: fp32 buffer + bf16 logits and
    # gradient (4 + 2·2 bytes per logit); kept for backward: the fp32 head-weight gradient and the bf16 hidden one.
    head = 2048 * 32000 * 8 + 32000 * 4096 * 4 + 2048 * 4096 * 2 + 3 * 4096 * 2048 * 2
    assert fused - plain == head - (32000 * 2048 * 18 + 3 * 4096 * 2048 * 2) == -114_294_784
    # Tensor parallel shards the vocabulary and takes the plain loss, as the trainer does.
    assert plan(seven_b(tp=2))["memory"]["activations"] == plan(seven_b(tp=2, fused_loss=False))["memory"]["activations"]


def test_7b_fsdp_on_8_h100_with_activation_checkpointing():
    r = plan(seven_b(activation_checkpointing=True, fused_loss=False))
    m = r["memory"]
    assert m["activations"] == 32 * 4096 * 2048 * 2 + 32000 * 2048 * 18 + 3 * 4096 * 2048 * 2 == 1_766_850_560
    # Now the optimizer step is the peak: weights, AdamW state, gradients and one fp32 shard-sized temporary.
    assert m["peak_at"] == "optimizer_step"
    assert m["total"] == (4 + 8 + 4 + 4) * N / 8 + 8 * BLOCK == 18_465_105_920
    # Recomputing the blocks is one more forward pass through them, less the LM head and the last matmul of
    # each block (the MLP down-projection), which checkpointing does not redo.
    head, down = 6 * 32000 * 4096, 2 * 32 * 4096 * 11008
    assert r["hardware_flops_per_token"] == pytest.approx(42_863_689_728 + (42_863_689_728 - head) / 3 - down)
    assert r["feasible"]


def test_ddp_and_zero_stages_shard_what_they_should():
    cfg = seven_b(global_batch_tokens=2048 * 8)  # one micro-batch per step: no gradients during forward
    ddp, z1, z2, z3 = (memory_per_gpu(resolve_shape(cfg), cfg, s) for s in ("ddp", "zero1", "zero2", "zero3"))
    assert (ddp["parameters"], ddp["gradients"], ddp["optimizer"]) == (4 * N, 4 * N, 8 * N)
    assert (z1["parameters"], z1["gradients"], z1["optimizer"]) == (4 * N, 4 * N, N)
    assert (z2["parameters"], z2["gradients"], z2["optimizer"]) == (4 * N, N / 2, N)
    assert (z3["parameters"], z3["gradients"], z3["optimizer"]) == (N / 2, N / 2, N)
    assert ddp["buffers"] == 2 * N  # the autocast bf16 copy of replicated weights
    assert ddp["total"] > z1["total"] > z2["total"] > z3["total"]
    assert not plan(seven_b(sharding="ddp"))["feasible"]  # 16 bytes × 6.7B = 108 GB > 80 GB


def test_tensor_and_pipeline_parallel_divide_weights_and_activations():
    base = seven_b(sharding="ddp", global_batch_tokens=2048 * 8, fused_loss=False)  # TP and PP take the plain loss
    tp = seven_b(sharding="ddp", tp=2, global_batch_tokens=2048 * 4)
    pp = seven_b(sharding="ddp", pp=2, global_batch_tokens=2048 * 4)
    m0, mt, mp = (memory_per_gpu(resolve_shape(c), c) for c in (base, tp, pp))
    assert mt["parameters"] == m0["parameters"] / 2
    assert mt["activations"] == pytest.approx(m0["activations"] / 2)
    # The busiest stage: 16 blocks plus the larger of embedding and head (equal here) and the final norm.
    assert mp["parameters"] == 4 * (16 * BLOCK + 32000 * 4096 + 4096)
    bad = plan(seven_b(tp=3, gpus=9, global_batch_tokens=2048 * 3))
    assert not bad["feasible"] and "tp=3" in bad["reasons"][0]


def test_newton_schulz_flops_count_each_matmul_on_the_wide_orientation():
    # one step on a 256 × 768 matrix: XXᵀ 2·256²·768, A² 2·256³, (bA + cA²)X 2·256²·768; tall ones are transposed
    assert newton_schulz_flops(256, 768, steps=1) == 2 * 256**2 * 768 + 2 * 256**3 + 2 * 256**2 * 768
    assert newton_schulz_flops(768, 256) == newton_schulz_flops(256, 768) == 5 * (4 * 256**2 * 768 + 2 * 256**3)


def test_muon_holds_one_momentum_per_block_matrix_and_adds_its_flops_to_each_step():
    adamw, muon = plan(seven_b()), plan(seven_b(optimizer="muon"))
    matrices = 32 * (4 * 4096**2 + 3 * 4096 * 11008)  # q, k, v, o (no GQA) and the MLP, in every block
    assert muon["memory"]["optimizer"] == (8 * (N - matrices) + 4 * matrices) / 8  # ZeRO-3 over 8 GPUs
    assert adamw["memory"]["optimizer"] == 8 * N / 8 and adamw["optimizer_flops_per_step"] == 0
    ns = 32 * (4 * newton_schulz_flops(4096, 4096) + 3 * newton_schulz_flops(4096, 11008))
    assert muon["optimizer_flops_per_step"] == ns  # every GPU orthogonalises every matrix
    assert muon["total_flops"] == adamw["total_flops"]  # model FLOPs (MFU's numerator) are the optimizer's own
    hardware = adamw["total_flops"] + ns * 8 * adamw["steps"]
    assert muon["days"] == pytest.approx(hardware / (8 * 989e12 * 0.4) / 86400)
    assert muon["memory"]["total"] < adamw["memory"]["total"]
    bad = plan(seven_b(optimizer="muon", tp=2, global_batch_tokens=2048 * 4))
    assert not bad["feasible"] and any("optimizer=muon runs with data parallelism only" in r for r in bad["reasons"])


def test_recipe_100b_on_64_a100_in_21_days_is_not_feasible():
    from megalang.config import load_yaml

    r = plan(PlanConfig(**load_yaml(ROOT / "recipes" / "plan-100b.yaml")))
    assert not r["feasible"]
    assert r["total_flops"] > 6e24  # the recipe's "≈1e24" undercounts 6·N·D by 6×
    assert r["days"] > 20 * 365  # decades, not 21 days
    assert r["mfu_needed"] > 100  # more than 100× the hardware's peak
    assert r["memory_per_gpu_bytes"] < r["gpu"]["usable_bytes"]  # memory is not the problem with ZeRO-3 + AC
    assert any("deadline" in reason for reason in r["reasons"])
    chin = r["chinchilla"]["for_deadline"]
    assert 5e9 < chin["params"] < 20e9 and chin["tokens"] == pytest.approx(20 * chin["params"])


def test_chinchilla_and_params_shapes():
    assert abs(count_params(shape_for_params(7e9)) - 7e9) / 7e9 < 0.03
    r = plan(PlanConfig(params=70e9, tokens=1.4e12, gpu="h100", gpus=1024, activation_checkpointing=True))
    c = r["chinchilla"]["for_plan_flops"]
    assert c["tokens"] / c["params"] == pytest.approx(20)
    assert c["flops"] == pytest.approx(6 * c["params"] * c["tokens"])


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="fp8"):
        plan(PlanConfig(preset="8b", tokens=1e12, gpu="a100-80gb", precision="fp8"))
    with pytest.raises(UserError, match="catalogue"):
        plan(PlanConfig(preset="8b", tokens=1e12, gpu="v100"))
    with pytest.raises(UserError, match="divisible"):
        plan(PlanConfig(preset="8b", tokens=1e12, gpus=8, tp=3))
    assert parse_count("10T") == 1e13 and parse_count("7e9") == 7e9 and parse_count("1.5B") == 1.5e9
    with pytest.raises(UserError):
        parse_count("lots")


def megalang(*args):
    return subprocess.run([sys.executable, "-m", "megalang", *args], capture_output=True, text=True, timeout=120)


def test_cli_json_and_exit_codes():
    ok = megalang("plan", "--preset", "debug", "--tokens", "1e9", "--gpu", "h100", "--gpus", "1",
                  "--global-batch-tokens", "2048", "--json")
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    for key in ("total_flops", "memory_per_gpu_bytes", "days", "feasible", "reasons"):
        assert key in result
    assert result["feasible"] is True
    bad = megalang("plan", str(ROOT / "recipes" / "plan-100b.yaml"), "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["feasible"] is False
    text = megalang("plan", str(ROOT / "recipes" / "plan-100b.yaml"), "--gpus", "32768", "--deadline-days", "30")
    assert "verdict" in text.stdout
    both = megalang("plan", "--preset", "8b", "--params", "7B", "--tokens", "1T")
    assert both.returncode == 2 and "exactly one of preset, params or shape" in both.stderr
    wrong = megalang("plan", "--preset", "8b", "--tokens", "1T", "--gpu", "nope")
    assert wrong.returncode == 2 and "catalogue" in wrong.stderr
