"""Model FLOPs per token, the peak rate of the device, and model FLOPs utilisation (MFU).

On a GPU the peak is the datasheet's dense rate; on a CPU it is this machine's measured large-matmul rate.
"""

from __future__ import annotations

import functools
import time

import torch

from megalang.model.presets import layer_params

# Dense (no 2:4 sparsity) datasheet peaks in FLOP/s: tensor-core bf16/fp16, and plain FP32 (TF32 is off by
# default in PyTorch, so fp32 training runs at the FP32 rate). Matched in order: the first name contained
# in torch.cuda.get_device_name() wins, so the PCIe/NVL variants come before the SXM "H100".
GPU_PEAKS: list[tuple[str, dict[str, float]]] = [
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("B200", {"bf16": 2.25e15, "fp16": 2.25e15}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
]


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM (Chowdhery et al. 2022) appendix B:

        6·N + 12·L·H·Q·T

    N: parameters that take part in a matmul, i.e. the decoder blocks plus the LM head (the input
    embedding is a lookup, not a matmul); 6 = 2 FLOPs per multiply-add × (1 forward + 2 backward).
    L layers, H query heads of size Q, sequence length T: the attention score and value matmuls, counted
    without a causal discount as PaLM does (GQA shares K/V but every query head still does both matmuls).
    """
    d = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    layers = config.num_hidden_layers
    # Norm gains are parameters but not matmul weights.
    n_matmul = layers * (layer_params(config) - 2 * d) + config.vocab_size * d
    return 6.0 * n_matmul + 12.0 * layers * heads * head_dim * seq_len


def measure_cpu_peak_flops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 3) -> float:
    """Best-of-`reps` rate of an n×n `torch.mm` on this CPU with the current thread count (cached per process)."""
    return _measure_mm(dtype, n, reps)


@functools.lru_cache(maxsize=None)
def _measure_mm(dtype: torch.dtype, n: int, reps: int) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up: thread pool start, kernel selection
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n**3 / best


def peak_flops(device: str | torch.device, precision: str = "bf16") -> float | None:
    """Peak FLOP/s for `precision` (fp32/bf16/fp16) on `device`; None for a GPU missing from GPU_PEAKS."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAKS:
            if key in name:
                return peaks.get(precision)
        return None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return measure_cpu_peak_flops(dtype)


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (None when the peak is unknown)."""
    if not peak:
        return None
    return tokens_per_s * flops_per_token / peak
