"""Model FLOPs per token, the peak rate of the device, and model FLOPs utilisation (MFU).

On a GPU the peak is the datasheet's dense rate; on a CPU it is this machine's measured large-matmul rate.
Also whether bf16 runs natively here (one helper for the demo and the trainer).
"""

from __future__ import annotations

import functools
import sys
import time
import warnings

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


# The three matmul layouts of a Linear layer: forward x·Wᵀ, backward g·W (input gradient) and gᵀ·x (weight
# gradient). MKL and oneDNN run them at one rate, but torch's own bf16 gemm, used on CPUs without oneDNN bf16
# support (no AVX-512), runs g·W 10-40× slower than the other two (2,048²: 0.39 against 15.5 GFLOP/s, measured
# with oneDNN switched off on a 2-core EPYC). Timing torch.mm(a, b) alone, i.e. g·W, put the bf16 "peak" far
# below the rate a training step reached (MFU 1101.8 %, issue #16).
MATMUL_LAYOUTS = {
    "x·Wᵀ": torch.nn.functional.linear,
    "g·W": torch.mm,
    "gᵀ·x": lambda a, b: torch.mm(a.t(), b),
}
PROBE_N = 256  # a layout more than 4× slower than the fastest at this size is not timed at full size
MFU_OVER_PEAK = ("MFU left out (null): this run's model FLOP/s exceed the peak FLOP/s, so the peak is wrong for this "
                 "run (on a CPU: measured while other processes were busy on these cores?); summary.json has "
                 "peak_flops, flops_per_token and tokens_per_s")


def measure_cpu_peak_flops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 3) -> float:
    """`measure_matmul_peak` with the current thread count, measured once per process and reused."""
    return _measure_cached(dtype, n, reps)


@functools.lru_cache(maxsize=None)
def _measure_cached(dtype: torch.dtype, n: int, reps: int) -> float:
    return measure_matmul_peak(dtype, n, reps)


def measure_matmul_peak(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 3) -> float:
    """The fastest of the Linear layouts (MATMUL_LAYOUTS) on n×n matrices: best-of-`reps` FLOP/s on this CPU."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    # Probing first keeps setup short where one layout is very slow (a 2,048² g·W in emulated bf16: ~40 s a call).
    m = min(n, PROBE_N)
    probe = {name: _best_rate(fn, a[:m, :m].contiguous(), b[:m, :m].contiguous(), 1) for name, fn in MATMUL_LAYOUTS.items()}
    fast = [name for name, rate in probe.items() if 4 * rate >= max(probe.values())]
    return max(_best_rate(MATMUL_LAYOUTS[name], a, b, reps) for name in fast)


def _best_rate(fn, a: torch.Tensor, b: torch.Tensor, reps: int) -> float:
    fn(a, b)  # warm-up: thread pool start, kernel selection
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * a.shape[0] ** 3 / best


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


def run_peak_flops(device: str | torch.device, precision: str, devices: int) -> float | None:
    """The peak of a whole run: one device's peak times the devices (ranks) that share its work. A run's
    tokens/s counts every rank's tokens, so its MFU must divide by every rank's peak, not one device's (which
    read world-size times too high). On a CPU each rank measures its own peak with the threads it has."""
    peak = peak_flops(device, precision)
    return None if peak is None else peak * devices


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak, at most 1. None when the peak is unknown, and
    None with a warning (once per call site) when the achieved rate is above it: the peak is then wrong for
    this run, and no number computed from it is an MFU."""
    if not peak:
        return None
    utilisation = tokens_per_s * flops_per_token / peak
    if utilisation > 1:
        warnings.warn(MFU_OVER_PEAK, RuntimeWarning, stacklevel=2)
        return None
    return utilisation


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether bf16 matmuls run natively on `device` (None: CUDA if there is one, else the CPU): any CUDA device,
    or a CPU with AVX512-BF16 or AMX. Elsewhere torch emulates bf16 and fp32 is faster."""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind != "cpu":
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def maybe_warn_emulated_bf16(device: str | torch.device, precision: str, enabled: bool = True) -> None:
    """One line on stderr when a bf16 run is about to train on a CPU that emulates bf16."""
    if enabled and precision == "bf16" and not native_bf16(device):
        print("train.precision=bf16: this CPU has no native bf16 matmul (AVX512-BF16 or AMX), so bf16 is emulated; "
              "train.precision=fp32 is faster here", file=sys.stderr, flush=True)
