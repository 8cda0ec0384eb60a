"""monitor/flops.py: FLOPs per token against the real model's matmul weights, peaks, MFU."""

from pathlib import Path

import pytest
import torch

from megalang.config import ModelConfig
from megalang.model.build import build_model
from megalang.monitor import flops
from megalang.monitor.flops import flops_per_token, measure_cpu_peak_flops, mfu, peak_flops

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
    assert mfu(1000.0, 6e6, None) is None


def test_cpu_peak_is_measured_once_per_process():
    rate = measure_cpu_peak_flops()
    assert 1e8 < rate < 1e14
    assert peak_flops("cpu", "fp32") is rate  # cached, not re-measured


def test_cpu_peak_is_the_2048_square_matmul_the_docs_name(monkeypatch):
    """The MFU docs name the matrix size of the CPU peak; the size peak_flops measures is the same."""
    calls = []
    monkeypatch.setattr(flops, "_measure_mm", lambda dtype, n, reps: calls.append((dtype, n)) or 1e11)
    assert peak_flops("cpu", "bf16") == 1e11
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
