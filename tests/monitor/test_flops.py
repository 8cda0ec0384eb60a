"""monitor/flops.py: FLOPs per token against the real model's matmul weights, peaks, MFU."""

import time
from pathlib import Path

import pytest
import torch

from megalang.config import ModelConfig
from megalang.model.build import build_model
from megalang.monitor import flops
from megalang.monitor.flops import flops_per_token, measure_cpu_peak_flops, measure_matmul_peak, mfu, peak_flops

ROOT = Path(__file__).resolve().parents[2]


def test_flops_per_token_is_6n_plus_attention():
    model = build_model(ModelConfig(preset="debug"), 500, 64, {}, 0, device="meta")
    c = model.config
    # N: every Linear weight (blocks + LM head), i.e. every matmul; embeddings and norms are not matmuls.
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * 64
    assert flops_per_token(c, 64) == 6 * n + attention


def test_mfu():
    assert mfu(1000.0, 6e6, 1.2e10) == pytest.approx(0.5)
    assert mfu(1000.0, 6e6, 6e9) == 1.0
    assert mfu(1000.0, 6e6, None) is None


def test_mfu_is_never_above_one_a_peak_below_the_achieved_rate_gives_none_and_says_why():
    with pytest.warns(RuntimeWarning, match="MFU left out.*exceed the peak"):
        assert mfu(1000.0, 6e6, 5.45e8) is None  # 11× the peak: the 1101.8 % of issue #16


def bf16_linear_step_flops_per_s(n: int) -> float:
    """Best-of-3 model FLOP/s of one Linear layer's forward and backward (6·n³) under bf16 autocast, as training runs it."""
    x = torch.randn(n, n, requires_grad=True)
    layer = torch.nn.Linear(n, n, bias=False)
    best = float("inf")
    for _ in range(3):  # the first is a warm-up
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = layer(x)
        y.float().sum().backward()
        best = min(best, time.perf_counter() - started)
    return 6 * n**3 / best


def test_bf16_peak_covers_a_training_step_on_torchs_own_bf16_gemm():
    # With oneDNN off, bf16 matmuls take torch's fallback gemm, as on a CPU without oneDNN bf16 support; its
    # g·W layout (torch.mm(a, b)) is 10-50× slower than the x·Wᵀ and gᵀ·x layouts a Linear step also runs.
    with torch.backends.mkldnn.flags(enabled=False):
        peak = measure_matmul_peak(torch.bfloat16, n=512, reps=2)
        step = bf16_linear_step_flops_per_s(512)
    assert step < peak
    assert 0 < mfu(step, 1.0, peak) < 1


def test_cpu_peak_is_measured_once_per_process():
    rate = measure_cpu_peak_flops()
    assert 1e8 < rate < 1e14
    assert peak_flops("cpu", "fp32") is rate  # cached, not re-measured


def test_cpu_peak_is_the_2048_square_matmul_the_docs_name(monkeypatch):
    """The MFU docs name the matrix size of the CPU peak; the size peak_flops measures is the same."""
    calls = []
    flops._measure_cached.cache_clear()
    monkeypatch.setattr(flops, "measure_matmul_peak", lambda dtype, n, reps: calls.append((dtype, n)) or 1e11)
    try:
        assert peak_flops("cpu", "bf16") == 1e11
    finally:
        flops._measure_cached.cache_clear()  # later tests measure the real peak
    assert calls == [(torch.bfloat16, 2048)]
    for doc in ("docs/benchmarks.md", "docs/monitoring.md"):
        text = (ROOT / doc).read_text()
        assert "2048²" in text and "4096²" not in text, doc


@pytest.mark.parametrize(
    "name, precision, expected",
    [("NVIDIA H100 80GB HBM3", "bf16", 989e12), ("NVIDIA H100 PCIe", "bf16", 756e12),
     ("NVIDIA H200", "bf16", 989e12), ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
     ("NVIDIA A100-SXM4-80GB", "fp32", 19.5e12), ("NVIDIA B200", "bf16", 2.25e15), ("Some GPU", "bf16", None)],
)
def test_gpu_peaks_come_from_the_datasheet_table(monkeypatch, name, precision, expected):
    monkeypatch.setattr(flops.torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_flops(torch.device("cuda"), precision) == expected


def test_a_run_peak_counts_every_rank(monkeypatch):
    """tokens/s is over all ranks, so the peak MFU divides by is all ranks' (it read world-size times too high)."""
    from megalang.monitor.flops import run_peak_flops

    monkeypatch.setattr(flops, "peak_flops", lambda device, precision: 1e12)
    assert run_peak_flops("cpu", "bf16", 1) == 1e12 and run_peak_flops("cpu", "bf16", 8) == 8e12
    assert mfu(4e3, 2e9 * 8 / 8, run_peak_flops("cpu", "bf16", 8)) == pytest.approx(4e3 * 2e9 / 8e12)
    monkeypatch.setattr(flops, "peak_flops", lambda device, precision: None)
    assert run_peak_flops("cuda", "bf16", 8) is None
