"""`megalang plan`: will a model × tokens × hardware plan fit in memory and finish in time? No training needed.

FLOPs follow PaLM (6·N + attention, `monitor.flops`); memory per GPU follows the ZeRO paper's sharding of
parameters / gradients / optimizer state, with activations counted from the tensors a transformers Llama
block saves for backward (checked against measured CPU runs in tests/test_plan_accuracy.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from megalang.config import PlanConfig
from megalang.errors import UserError
from megalang.model.presets import PRESETS, count_params, layer_params
from megalang.monitor.flops import flops_per_token
from megalang.train.loss import chunk_rows

GIB = 1 << 30
SECONDS_PER_DAY = 86_400
CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: compute-optimal D ≈ 20·N
MFU_CEILING = 0.6  # large published runs sustain 0.35–0.55; a plan needing more is not credible
CUDA_RESERVE_BYTES = 1 * GIB  # CUDA context, NCCL and cuBLAS workspaces, outside PyTorch's allocator
FRAGMENTATION = 0.05  # caching-allocator slack kept free


@dataclass(frozen=True)
class Gpu:
    """One catalogue entry: dense (no 2:4 sparsity) datasheet peaks, memory as nvidia-smi reports it, and
    per-GPU bandwidths in GB/s (NVLink within a node, the network NIC between nodes)."""

    name: str
    memory_bytes: int
    peaks: dict[str, float | None]
    nvlink_gbs: float
    network_gbs: float


MIB = 1 << 20
GPU_CATALOGUE: dict[str, Gpu] = {
    # A100 SXM: 312 TF bf16/fp16 tensor core, 19.5 TF FP32, no fp8; NVLink 3 600 GB/s; HDR 200 Gb/s NIC.
    "a100-40gb": Gpu("a100-40gb", 40_960 * MIB, {"bf16": 312e12, "fp16": 312e12, "fp8": None, "fp32": 19.5e12}, 600, 25),
    "a100-80gb": Gpu("a100-80gb", 81_920 * MIB, {"bf16": 312e12, "fp16": 312e12, "fp8": None, "fp32": 19.5e12}, 600, 25),
    # H100 SXM: 989 TF bf16, 1979 TF fp8, 67 TF FP32; NVLink 4 900 GB/s; NDR 400 Gb/s NIC.
    "h100": Gpu("h100", 81_559 * MIB, {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "fp32": 67e12}, 900, 50),
    # H200 SXM: H100 compute with 141 GB HBM3e.
    "h200": Gpu("h200", 143_771 * MIB, {"bf16": 989e12, "fp16": 989e12, "fp8": 1979e12, "fp32": 67e12}, 900, 50),
    # B200: 2.25 PF bf16, 4.5 PF fp8 dense; NVLink 5 1800 GB/s; 400 Gb/s NIC. FP32 is not a training mode here.
    "b200": Gpu("b200", 180 * GIB, {"bf16": 2.25e15, "fp16": 2.25e15, "fp8": 4.5e15, "fp32": None}, 1800, 50),
}

# Bytes per parameter element held for training: fp32 master weights, fp32 gradients, AdamW m and v in fp32;
# Muon keeps one fp32 momentum per matrix element (train/muon.py).
PARAM_BYTES, GRAD_BYTES, OPTIM_BYTES, MUON_BYTES = 4, 4, 8, 4
NS_STEPS = 5  # optimizer.muon_ns_steps' default


# --- inputs -----------------------------------------------------------------------------------------


def resolve_gpu(name: str, precision: str) -> tuple[Gpu, float]:
    """The catalogue entry (or this CPU, measured) and its peak FLOP/s for `precision`."""
    if name == "cpu":
        return cpu_entry(precision)
    if name not in GPU_CATALOGUE:
        raise UserError(f"gpu '{name}' is not in the catalogue; choose one of: {', '.join([*GPU_CATALOGUE, 'cpu'])}")
    gpu = GPU_CATALOGUE[name]
    peak = gpu.peaks.get(precision)
    if not peak:
        supported = ", ".join(p for p, v in gpu.peaks.items() if v)
        raise UserError(f"precision {precision} has no datasheet peak on {name}; use one of: {supported}")
    return gpu, peak


def cpu_entry(precision: str) -> tuple[Gpu, float]:
    """This machine: measured large-matmul rate (fp8 has no CPU matmul) and its physical memory."""
    import torch

    from megalang.monitor.flops import measure_cpu_peak_flops

    if precision == "fp8":
        raise UserError("precision fp8 is not available on the CPU; use fp32 or bf16")
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    peak = measure_cpu_peak_flops(dtype)
    return Gpu("cpu", memory, {precision: peak}, 0, 0), peak


def resolve_shape(cfg: PlanConfig) -> dict[str, Any]:
    """LlamaConfig-style keys for the model in the plan (from the preset, the shape, or a parameter count)."""
    if cfg.preset is not None:
        if cfg.preset not in PRESETS:
            raise UserError(f"preset '{cfg.preset}' is unknown; choose one of: {', '.join(PRESETS)}")
        return dict(PRESETS[cfg.preset])
    if cfg.shape is not None:
        s = cfg.shape
        return dict(vocab_size=s.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                    num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads,
                    num_key_value_heads=s.num_kv_heads or s.num_heads, tie_word_embeddings=s.tie_word_embeddings)
    return shape_for_params(cfg.params)


def shape_for_params(params: float, vocab_size: int = 128_256) -> dict[str, Any]:
    """A Llama-3-like shape with about `params` parameters: heads of 128, 8 KV heads, MLP ≈ 3.5·d, and
    depth ≈ d/112 (Llama 3 8B/70B and the 100b preset sit between d/128 and d/102)."""

    def shape(width: int) -> dict[str, Any]:
        heads = max(1, width // 128)
        return dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=max(256, round(3.5 * width / 256) * 256),
                    num_hidden_layers=max(1, round(width / 112)), num_attention_heads=heads,
                    num_key_value_heads=min(8, heads), tie_word_embeddings=False, head_dim=width // heads)

    best = min((shape(w) for w in range(128, 65_537, 128)), key=lambda s: abs(count_params(s) - params))
    return best


# --- memory -----------------------------------------------------------------------------------------


def activation_elements_per_token(shape: dict[str, Any]) -> dict[str, float]:
    """Elements per token that one Llama block and the LM head keep for backward (transformers, sdpa).

    Block: the two RMSNorm inputs and outputs (4h), q and its rotated copy, the attention output and its
    reshaped copy (4h), k and v after rotary (2·kv), gate, up, SiLU(gate) and their product (4·i), plus
    per-head log-sum-exp and the two per-token norm scales. sdpa (flash / memory-efficient kernels on
    GPU, the flash kernel on CPU) never materialises the s×s scores, so there is no s² term.
    Head: logits and their log-softmax (fp32) are kept, and backward briefly holds two more fp32 V-wide
    tensors (the log-softmax and logits gradients); the final norm keeps ~3h.
    """
    h, i = shape["hidden_size"], shape["intermediate_size"]
    heads = shape["num_attention_heads"]
    head_dim = shape.get("head_dim") or h // heads
    kv = (shape.get("num_key_value_heads") or heads) * head_dim
    return {"block": 8 * h + 4 * i + 2 * kv + heads + 2, "block_input": h, "final": 3 * h, "vocab": shape["vocab_size"]}


def memory_per_gpu(shape: dict[str, Any], cfg: PlanConfig, sharding: str | None = None,
                   activation_checkpointing: bool | None = None) -> dict[str, Any]:
    """Bytes one GPU holds, by category, and the modelled peak (the largest of three moments of a step).

    Moments: end of forward (saved activations and the loss's V-wide temporaries; gradients exist only
    when a previous micro-batch left them), end of backward (all gradients, at most one recomputed block),
    and the optimizer step (foreach AdamW makes one fp32 temporary the size of the local shard; Muon gathers one
    whole matrix at a time, see `muon_cost`).
    """
    sharding = sharding or cfg.sharding
    ac = cfg.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
    dp = cfg.gpus // (cfg.tp * cfg.pp)
    act_bytes = 4 if cfg.precision == "fp32" else 2  # fp8 recipes keep activations for backward in bf16
    local = local_params(shape, cfg.tp, cfg.pp)
    shard = {"ddp": (1, 1, 1), "zero1": (1, 1, dp), "zero2": (1, dp, dp), "zero3": (dp, dp, dp)}[sharding]
    params = PARAM_BYTES * local / shard[0]
    grads = GRAD_BYTES * local / shard[1]
    muon = muon_cost(shape, cfg)
    adamw_local = local - muon["params"]
    optim = (OPTIM_BYTES * adamw_local + MUON_BYTES * muon["params"]) / shard[2]
    buffers = buffer_bytes(shape, cfg, sharding, local, act_bytes)

    per_token = activation_elements_per_token(shape)
    tokens = cfg.micro_batch_size * cfg.seq_len
    layers = math.ceil(shape["num_hidden_layers"] / cfg.pp)
    accum = grad_accum(cfg)
    in_flight = min(cfg.pp, accum) if cfg.pp > 1 else 1  # 1F1B: stage 0 holds pp micro-batches at once
    block = per_token["block"] * tokens * act_bytes / cfg.tp  # sequence parallelism splits every block tensor
    kept = per_token["block_input"] * tokens * act_bytes / cfg.tp if ac else block
    head = head_bytes(per_token, tokens, act_bytes, shape["hidden_size"], cfg)
    first_stage = in_flight * layers * kept
    last_stage = layers * kept + head
    activations = max(first_stage, last_stage)
    static = params + optim + buffers
    moments = {
        "forward_end": static + activations + (grads if accum > 1 else 0),
        "backward_end": static + grads + (block if ac else 0),
        "optimizer_step": static + grads + PARAM_BYTES * adamw_local / shard[2] + muon["step_bytes"],
    }
    peak_moment = max(moments, key=moments.get)
    return {
        "sharding": sharding, "activation_checkpointing": ac,
        "parameters": params, "gradients": grads, "optimizer": optim, "activations": activations,
        "buffers": buffers, "total": moments[peak_moment], "peak_at": peak_moment,
    }


def head_bytes(per_token: dict[str, float], tokens: int, act_bytes: int, hidden: int, cfg: PlanConfig) -> float:
    """Activation bytes of the output layer and loss at their peak (last stage).

    Plain loss (also what tensor and pipeline parallel use): logits in the compute dtype, an fp32 upcast when
    that differs, fp32 log-probs, then two fp32 gradients of the same width at the start of backward.
    Chunked loss (train/loss.py): one chunk's fp32 logits buffer, its compute-dtype logits and gradient when
    that is not fp32, and the gradients it keeps until backward: the hidden states' and the head weight's (fp32).
    """
    final = per_token["final"] * tokens * act_bytes / cfg.tp
    vocab = per_token["vocab"]
    if not cfg.fused_loss or cfg.tp > 1 or cfg.pp > 1:
        return vocab * tokens / cfg.tp * (act_bytes + (4 if act_bytes != 4 else 0) + 4 + 8) + final
    rows = min(tokens, chunk_rows(int(vocab), "cpu" if cfg.gpu == "cpu" else "cuda"))
    chunk = rows * vocab * (4 + (2 * act_bytes if act_bytes != 4 else 0))
    return chunk + vocab * hidden * 4 + tokens * hidden * act_bytes + final


def local_params(shape: dict[str, Any], tp: int, pp: int) -> float:
    """Parameters on the busiest rank: its stage's blocks plus the larger of embedding and head, split by TP."""
    d, vocab, layers = shape["hidden_size"], shape["vocab_size"], shape["num_hidden_layers"]
    blocks = math.ceil(layers / pp) * layer_params(shape)
    if pp == 1:
        return count_params(shape) / tp
    return (blocks + vocab * d + d) / tp


def muon_matrices(shape: dict[str, Any]) -> list[tuple[int, int]]:
    """(rows, cols) of one block's matrices that Muon takes: q, k, v, o, gate, up, down (train/muon.py)."""
    d, i = shape["hidden_size"], shape["intermediate_size"]
    heads = shape["num_attention_heads"]
    head_dim = shape.get("head_dim") or d // heads
    kv = (shape.get("num_key_value_heads") or heads) * head_dim
    return [(heads * head_dim, d), (kv, d), (kv, d), (d, heads * head_dim), (i, d), (i, d), (d, i)]


def newton_schulz_flops(rows: int, cols: int, steps: int = NS_STEPS) -> int:
    """Matmul FLOPs of Muon's orthogonalisation of one rows × cols matrix, on its wide orientation m ≤ n: each
    step forms A = XXᵀ (2m²n), A² inside bA + cA² (2m³) and (bA + cA²)X (2m²n). Elementwise terms (O(mn)) are
    left out, as everywhere in these counts."""
    m, n = min(rows, cols), max(rows, cols)
    return steps * (4 * m * m * n + 2 * m ** 3)


def muon_cost(shape: dict[str, Any], cfg: PlanConfig) -> dict[str, float]:
    """What optimizer=muon changes on the busiest rank: the matrix parameters Muon holds (one momentum each
    instead of AdamW's two moments), the Newton–Schulz FLOPs of one optimizer step, and the bytes its step
    gathers at once (the largest whole matrix in fp32 and bf16, the iteration's next X, and A and bA + cA² in
    bf16). Every rank orthogonalises every matrix of its stage (train/muon.py gathers; it does not split the
    work as torchtitan's distributed Muon does), so the FLOPs do not shrink with data parallelism."""
    if cfg.optimizer != "muon":
        return {"params": 0.0, "flops_per_step": 0.0, "step_bytes": 0.0}
    layers = math.ceil(shape["num_hidden_layers"] / cfg.pp)
    matrices = muon_matrices(shape)
    return {"params": layers * sum(r * c for r, c in matrices) / cfg.tp,
            "flops_per_step": layers * sum(newton_schulz_flops(r, c) for r, c in matrices),
            "step_bytes": max(8 * r * c + 4 * min(r, c) ** 2 for r, c in matrices)}


def buffer_bytes(shape: dict[str, Any], cfg: PlanConfig, sharding: str, local: float, act_bytes: int) -> float:
    """Transient copies of parameters/gradients that live outside the categories above.

    Replicated weights under autocast are cast once per step and cached (2 bytes/param); ZeRO-3 instead
    all-gathers each block in the compute dtype, two blocks at a time (current + prefetch), and
    reduce-scatters that block's fp32 gradient. Gradients are assumed to be DDP bucket views
    (`gradient_as_bucket_view=True`), so buckets add nothing.
    """
    block = layer_params(shape) / cfg.tp
    if sharding == "zero3":
        return 2 * block * act_bytes + block * GRAD_BYTES
    return local * act_bytes if act_bytes != 4 else 0.0


def usable_memory(gpu: Gpu) -> float:
    if gpu.name == "cpu":
        return gpu.memory_bytes * 0.9
    return gpu.memory_bytes * (1 - FRAGMENTATION) - CUDA_RESERVE_BYTES


def grad_accum(cfg: PlanConfig) -> int:
    """Micro-batches per optimizer step per data-parallel rank (at least 1)."""
    dp = cfg.gpus // (cfg.tp * cfg.pp)
    return max(1, cfg.global_batch_tokens // (cfg.seq_len * cfg.micro_batch_size * dp))


# --- FLOPs and time ---------------------------------------------------------------------------------


def step_flops(shape: dict[str, Any], seq_len: int, tokens: int, activation_checkpointing: bool) -> float:
    """FLOPs the hardware does for `tokens` trained tokens: model FLOPs, plus the blocks' forward again when
    they are recomputed. Not recomputed: the LM head (outside the blocks) and each block's last matmul, the
    MLP down-projection, whose output no backward op needs (torch's non-reentrant checkpoint stops
    recomputing once every saved tensor is back)."""
    model = flops_per_token(SimpleNamespace(**_flops_shape(shape)), seq_len) * tokens
    if not activation_checkpointing:
        return model
    h = shape["hidden_size"]
    head = 6 * shape["vocab_size"] * h * tokens
    down = 2 * shape["num_hidden_layers"] * h * shape["intermediate_size"] * tokens
    return model + (model - head) / 3 - down


def _flops_shape(shape: dict[str, Any]) -> dict[str, Any]:
    out = dict(shape)
    out.setdefault("num_key_value_heads", shape["num_attention_heads"])
    out.setdefault("head_dim", None)
    return out


def chinchilla(total_flops: float) -> dict[str, float]:
    """Compute-optimal parameters and tokens for a FLOP budget: C = 6·N·D with D = 20·N."""
    params = math.sqrt(total_flops / (6 * CHINCHILLA_TOKENS_PER_PARAM))
    return {"params": params, "tokens": CHINCHILLA_TOKENS_PER_PARAM * params, "flops": total_flops}


# --- the plan ---------------------------------------------------------------------------------------


def check_degrees(shape: dict[str, Any], cfg: PlanConfig) -> list[str]:
    """Parallel degrees that cannot work with this shape or cluster (each a reason the plan fails)."""
    if cfg.gpus % (cfg.tp * cfg.pp):
        raise UserError(f"gpus={cfg.gpus} is not divisible by tp × pp = {cfg.tp} × {cfg.pp}; change tp, pp or gpus")
    reasons = []
    heads, kv = shape["num_attention_heads"], shape.get("num_key_value_heads") or shape["num_attention_heads"]
    if heads % cfg.tp or shape["intermediate_size"] % cfg.tp or (kv % cfg.tp and cfg.tp % kv):
        reasons.append(f"tp={cfg.tp} does not divide the {heads} query heads / {kv} KV heads / MLP width "
                       f"{shape['intermediate_size']}")
    if shape["num_hidden_layers"] % cfg.pp:
        reasons.append(f"pp={cfg.pp} does not divide the {shape['num_hidden_layers']} layers evenly")
    dp = cfg.gpus // (cfg.tp * cfg.pp)
    per_step = cfg.seq_len * cfg.micro_batch_size * dp
    if cfg.global_batch_tokens % per_step:
        reasons.append(f"global_batch_tokens={cfg.global_batch_tokens} is not a multiple of seq_len × "
                       f"micro_batch_size × dp = {per_step}")
    return reasons


def plan(cfg: PlanConfig) -> dict[str, Any]:
    """Everything `megalang plan` prints, as one JSON-ready dict; `feasible` is False with `reasons`."""
    shape = resolve_shape(cfg)
    gpu, peak = resolve_gpu(cfg.gpu, cfg.precision)
    reasons = check_degrees(shape, cfg)
    notes: list[str] = []
    n_params = count_params(shape)
    per_token = flops_per_token(SimpleNamespace(**_flops_shape(shape)), cfg.seq_len)
    total_flops = per_token * cfg.tokens
    cluster_peak = cfg.gpus * peak
    steps = math.ceil(cfg.tokens / cfg.global_batch_tokens)
    optimizer_flops = muon_cost(shape, cfg)["flops_per_step"]  # per GPU and step, on top of the model's
    step_flops_per_gpu = per_token * cfg.global_batch_tokens / cfg.gpus + optimizer_flops
    tokens_per_s = cfg.global_batch_tokens * cfg.mfu * peak / step_flops_per_gpu
    seconds = (total_flops + optimizer_flops * cfg.gpus * steps) / (cfg.mfu * cluster_peak)
    days = seconds / SECONDS_PER_DAY

    memory = memory_per_gpu(shape, cfg)
    usable = usable_memory(gpu)
    if memory["total"] > usable:
        reasons.append(f"needs {memory['total'] / GIB:.1f} GiB per GPU with {_strategy(memory)}; {gpu.name} has "
                       f"{usable / GIB:.1f} GiB usable" + _memory_hint(shape, cfg, usable))
    strategies = {f"{s}{'+ac' if ac else ''}": memory_per_gpu(shape, cfg, s, ac)
                  for s in ("ddp", "zero1", "zero2", "zero3") for ac in (False, True)}

    mfu_needed = gpus_needed = None
    if cfg.deadline_days:
        mfu_needed = total_flops / (cfg.deadline_days * SECONDS_PER_DAY * cluster_peak)
        gpus_needed = math.ceil(total_flops / (cfg.deadline_days * SECONDS_PER_DAY * peak * cfg.mfu))
        if days > cfg.deadline_days:
            reasons.append(f"takes {days:,.1f} days at MFU {cfg.mfu:.0%}, over the {cfg.deadline_days:g}-day deadline; "
                           f"the deadline needs MFU {_ratio(mfu_needed)} or {gpus_needed:,} {gpu.name} at MFU {cfg.mfu:.0%}")
        if mfu_needed > MFU_CEILING:
            reasons.append(f"the deadline needs MFU {_ratio(mfu_needed)}; large runs do not sustain more than ~{MFU_CEILING:.0%}")
    comm = communication(shape, cfg, gpu, per_token)
    if comm["seconds_per_step"] > comm["compute_seconds_per_step"]:
        notes.append(f"gradient/parameter traffic ({comm['seconds_per_step']:.2f} s/step) exceeds compute "
                     f"({comm['compute_seconds_per_step']:.2f} s/step) and cannot be hidden; raise global_batch_tokens "
                     "or shard within nodes (HSDP)")
    if cfg.optimizer == "muon" and (cfg.tp > 1 or cfg.pp > 1):
        reasons.append("optimizer=muon runs with data parallelism only (FSDP2, DDP, HSDP); use tp=1 and pp=1")
    if optimizer_flops > 0.05 * (step_flops_per_gpu - optimizer_flops):
        notes.append(f"Muon's Newton–Schulz is {optimizer_flops / (step_flops_per_gpu - optimizer_flops):.0%} of each "
                     "step's model FLOPs on every GPU (each rank orthogonalises every matrix); a larger "
                     "global_batch_tokens spreads it over more tokens")
    if cfg.tp > cfg.gpus_per_node:
        notes.append(f"tp={cfg.tp} spans nodes ({cfg.gpus_per_node} GPUs each): keep TP inside NVLink")

    budget = chinchilla(total_flops)
    ratio = cfg.tokens / n_params
    if ratio < CHINCHILLA_TOKENS_PER_PARAM / 2:
        notes.append(f"{ratio:.2g} tokens per parameter: under-trained for its compute (compute-optimal ≈ 20)")
    result = {
        "model": {"params": n_params, "shape": shape, "source": cfg.preset or ("params" if cfg.params else "shape")},
        "gpu": {"name": gpu.name, "memory_bytes": gpu.memory_bytes, "usable_bytes": usable, "peak_flops": peak,
                "nvlink_gbs": gpu.nvlink_gbs, "network_gbs": gpu.network_gbs},
        "gpus": cfg.gpus, "parallel": {"dp": cfg.gpus // (cfg.tp * cfg.pp), "tp": cfg.tp, "pp": cfg.pp,
                                       "sharding": cfg.sharding, "grad_accum": grad_accum(cfg)},
        "tokens": cfg.tokens, "seq_len": cfg.seq_len, "precision": cfg.precision, "mfu": cfg.mfu,
        "flops_per_token": per_token, "flops_6nd": 6 * n_params * cfg.tokens, "total_flops": total_flops,
        "hardware_flops_per_token": step_flops(shape, cfg.seq_len, 1, cfg.activation_checkpointing),
        "optimizer": cfg.optimizer, "optimizer_flops_per_step": optimizer_flops,
        "tokens_per_s": tokens_per_s, "steps": steps,
        "days": days, "deadline_days": cfg.deadline_days, "mfu_needed": mfu_needed, "gpus_needed": gpus_needed,
        "memory_per_gpu_bytes": memory["total"], "memory": memory,
        "memory_by_strategy": strategies, "communication": comm,
        "chinchilla": {"for_plan_flops": budget, "tokens_for_params": CHINCHILLA_TOKENS_PER_PARAM * n_params,
                       "tokens_per_param": ratio},
        "feasible": not reasons, "reasons": reasons, "notes": notes,
    }
    if cfg.deadline_days:
        result["chinchilla"]["for_deadline"] = chinchilla(cfg.deadline_days * SECONDS_PER_DAY * cluster_peak * cfg.mfu)
    return result


def communication(shape: dict[str, Any], cfg: PlanConfig, gpu: Gpu, per_token: float) -> dict[str, float]:
    """Data-parallel traffic per GPU per step (ring collectives move (dp-1)/dp of the data each way) against
    the step's compute time at the assumed MFU. Across nodes the NIC is the bottleneck, else NVLink."""
    dp = cfg.gpus // (cfg.tp * cfg.pp)
    local = local_params(shape, cfg.tp, cfg.pp)
    share = (dp - 1) / dp if dp > 1 else 0.0
    if cfg.sharding == "zero3":  # all-gather in bf16 for forward and again for backward, reduce-scatter in fp32
        traffic = share * local * (2 + 2 + GRAD_BYTES)
    else:  # all-reduce (or reduce-scatter + all-gather) of fp32 gradients
        traffic = 2 * share * local * GRAD_BYTES
    spans_nodes = cfg.gpus > cfg.gpus_per_node and dp > 1
    bandwidth = (gpu.network_gbs if spans_nodes else gpu.nvlink_gbs) * 1e9
    compute = cfg.global_batch_tokens * per_token / (cfg.gpus * gpu.peaks[cfg.precision] * cfg.mfu)
    return {"bytes_per_step": traffic, "seconds_per_step": traffic / bandwidth if bandwidth else 0.0,
            "compute_seconds_per_step": compute, "over": "network" if spans_nodes else "nvlink"}


def si(value: float) -> str:
    """7.25M, 100.3B, 10T: sizes as people say them (three significant digits)."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _ratio(mfu: float) -> str:
    """An MFU as a percentage, or as a multiple of the peak when it is beyond 100%."""
    return f"{mfu:.1%}" if mfu <= 1 else f"{mfu:,.0%} ({mfu:,.0f}× the hardware's peak)"


def _strategy(memory: dict[str, Any]) -> str:
    return memory["sharding"] + (" + activation checkpointing" if memory["activation_checkpointing"] else "")


def _memory_hint(shape: dict[str, Any], cfg: PlanConfig, usable: float) -> str:
    """The cheapest change that fits, if any: activation checkpointing first, then more sharding."""
    for sharding in ("ddp", "zero1", "zero2", "zero3"):
        for ac in (False, True):
            m = memory_per_gpu(shape, cfg, sharding, ac)
            if m["total"] <= usable and (sharding, ac) != (cfg.sharding, cfg.activation_checkpointing):
                order = ("ddp", "zero1", "zero2", "zero3")
                if order.index(sharding) >= order.index(cfg.sharding):
                    return f" ({_strategy(m)} would need {m['total'] / GIB:.1f} GiB)"
    return " (no sharding/checkpointing choice fits at this tp/pp; raise tp, pp or gpus)"


# --- text -------------------------------------------------------------------------------------------


def format_plan(r: dict[str, Any]) -> str:
    """The plan as a short report for a terminal."""
    g = 1 / GIB
    m = r["memory"]
    lines = [
        f"model      {si(r['model']['params'])} parameters ({r['model']['source']}), "
        f"{si(r['tokens'])} tokens ({r['chinchilla']['tokens_per_param']:.3g} per parameter)",
        f"hardware   {r['gpus']} × {r['gpu']['name']} ({r['gpu']['peak_flops'] / 1e12:.3g} TFLOP/s {r['precision']} each), "
        f"dp={r['parallel']['dp']} tp={r['parallel']['tp']} pp={r['parallel']['pp']} {r['parallel']['sharding']}",
        f"compute    {r['total_flops']:.3g} FLOPs (6·N·D = {r['flops_6nd']:.3g}; {r['flops_per_token']:.3g} per token)",
        f"time       {r['days']:,.1f} days at MFU {r['mfu']:.0%} ({r['tokens_per_s']:,.0f} tokens/s)",
    ]
    if r["optimizer"] == "muon":
        lines.append(f"optimizer  muon: {r['optimizer_flops_per_step']:.3g} Newton–Schulz FLOPs per step on each GPU")
    if r["deadline_days"]:
        lines.append(f"deadline   {r['deadline_days']:g} days needs MFU {_ratio(r['mfu_needed'])} on these GPUs, "
                     f"or {r['gpus_needed']:,} GPUs at MFU {r['mfu']:.0%}")
    lines.append(f"memory     {m['total'] * g:,.1f} GiB per GPU at {m['peak_at']} of {r['gpu']['usable_bytes'] * g:,.1f} usable: "
                 f"params {m['parameters'] * g:.1f}, grads {m['gradients'] * g:.1f}, optimizer {m['optimizer'] * g:.1f}, "
                 f"activations {m['activations'] * g:.1f}, buffers {m['buffers'] * g:.1f}")
    lines.append("by strategy " + "  ".join(f"{k} {v['total'] * g:,.1f}" for k, v in r["memory_by_strategy"].items()) + " GiB")
    c = r["chinchilla"]["for_plan_flops"]
    lines.append(f"chinchilla this compute is optimal for {si(c['params'])} params on {si(c['tokens'])} tokens")
    if "for_deadline" in r["chinchilla"]:
        d = r["chinchilla"]["for_deadline"]
        lines.append(f"           the deadline's compute ({d['flops']:.3g} FLOPs) is optimal for {si(d['params'])} "
                     f"params on {si(d['tokens'])} tokens")
    lines.append("verdict    " + ("FEASIBLE" if r["feasible"] else "NOT FEASIBLE"))
    lines += [f"  - {reason}" for reason in r["reasons"]]
    lines += [f"  note: {note}" for note in r["notes"]]
    return "\n".join(lines)


def parse_count(text: str | float, what: str = "value") -> float:
    """'7e9', '7B', '10T', '1.5M', '2k' → a number (SI suffixes as people write model and data sizes)."""
    if isinstance(text, (int, float)):
        return float(text)
    raw = text.strip().replace("_", "").replace(",", "")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}.get(raw[-1:].lower(), 1.0)
    number = raw[:-1] if scale != 1.0 else raw
    try:
        value = float(number) * scale
    except ValueError:
        raise UserError(f"{what} '{text}': expected a number such as 7e9, 7B or 10T") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what} '{text}': must be a positive number")
    return value
