"""Chunked linear + cross-entropy: the next-token loss without the full logits tensor.

The usual loss materialises `tokens × vocab` logits, copies them to fp32, writes a log-softmax of the same
size and, in backward, a gradient of the same size again: four or five passes over a tensor that for a 4k ×
8k batch is 134 MB and for 8k × 128k (Llama 3 vocabulary) is 4 GB. Here the output projection and the loss
are one autograd function that walks the tokens in chunks. For each chunk it computes the logits, the
log-sum-exp in fp32, the loss and — since the loss is a scalar — the gradients with respect to the hidden
states and the head weight right away; backward only scales them by the incoming gradient. Every pass over a
chunk's logits stays in cache and the logits are never stored. Same idea as Liger-Kernel's
FusedLinearCrossEntropy and Wijmans et al. 2024 ("Cut Your Losses"), in plain PyTorch so it runs on CPUs too.

`lm_loss(model, labels, **inputs)` runs a transformers causal LM with its output layer computing this loss.
It falls back to logits + `F.cross_entropy` where the head is not a plain bias-free Linear, where hooks watch
the head (Opacus' per-sample gradients), where the weight is a tensor-parallel DTensor (vocab-sharded), and for
architectures that transform the output layer's result (soft-capping, scaling). Evaluation uses it too, with
`reduction="sum"`, and under no_grad computes the loss alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from megalang.torch_compat import has_hooks

IGNORE = -100


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The plain loss: token mean (or sum) over labels ≠ −100 of the full logits, in fp32 whatever the autocast
    dtype (the log-sum-exp over the vocabulary needs it)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction=reduction)


def chunk_rows(vocab_size: int, device_type: str) -> int:
    """Tokens per chunk: about 4 M logits (16 MB in fp32) on a CPU, 64 M (256 MB) on a GPU, and never fewer
    than 512 rows. The floor matters at large vocabularies: each chunk adds its part of the head's gradient
    into the whole `vocab × hidden` fp32 accumulator, a memory pass that only enough rows per chunk amortise
    (bench/loss_head.py at 4,096 × 128,256 on a CPU: bf16 forward+backward 10.4 s with 32 rows, 3.0 s with 512,
    5.8 s for the plain loss). At 8k: 128–1024 rows the fastest in bf16, within 3 % of the fastest in fp32.
    GPU sizes are not measured on a GPU yet."""
    budget = 1 << 26 if device_type == "cuda" else 1 << 22
    return max(512, budget // vocab_size)


class _LinearCrossEntropy(torch.autograd.Function):
    """loss = mean (or sum) over labels ≠ −100 of CE(hidden @ weightᵀ, labels); gradients computed in forward
    when `grads` (autograd's needs_input_grad does not see no_grad, which would triple an evaluation's work)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype,
                rows: int, mean: bool, grads: bool) -> torch.Tensor:
        h, w = hidden.to(dtype), weight.to(dtype)
        want_h, want_w = grads and ctx.needs_input_grad[0], grads and ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        valid = labels != IGNORE
        scale = 1.0 / valid.sum().clamp(min=1).float() if mean else torch.ones((), device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        # One fp32 buffer for every chunk's logits: a fresh 16 MB tensor per chunk costs page faults on a CPU.
        buffer = torch.empty((min(rows, h.shape[0]), w.shape[0]), dtype=torch.float32, device=hidden.device)
        for start in range(0, h.shape[0], rows):
            hc, keep = h[start:start + rows], valid[start:start + rows]
            target = labels[start:start + rows].masked_fill(~keep, 0)[:, None]  # other negatives fail in gather
            logits = buffer[:hc.shape[0]]
            if dtype == torch.float32:
                torch.mm(hc, w.T, out=logits)
            else:
                logits.copy_(hc @ w.T)
            picked = logits.gather(1, target).squeeze(1)
            top = logits.amax(dim=1, keepdim=True)
            probs = logits.sub_(top).exp_()  # in place: the chunk's logits become exp(logit − max)
            norm = probs.sum(dim=1, keepdim=True)
            total += ((norm.log() + top).squeeze(1) - picked).mul_(keep).sum()
            if not (want_h or want_w):
                continue
            # d loss / d logits = (softmax − one-hot) · scale, zero on ignored tokens. The 1/tokens scale is
            # applied to the two results after the loop, not here: softmax/tokens would underflow in fp16.
            weight_rows = keep[:, None].float()
            grad = probs.mul_(weight_rows / norm)
            grad.scatter_add_(1, target, -weight_rows)
            grad = grad.to(dtype)
            if want_h and grad_h.dtype == dtype:
                torch.mm(grad, w, out=grad_h[start:start + rows])
            elif want_h:
                grad_h[start:start + rows] = grad @ w
            if want_w and dtype == torch.float32:
                torch.addmm(grad_w, grad.T, hc, out=grad_w)  # (not addmm_: FlopCounterMode counts this form)
            elif want_w:
                grad_w += (grad.T @ hc).float()  # each chunk's product in `dtype`, their sum in fp32
        if want_h:
            grad_h.mul_(scale)
        if want_w:
            grad_w = grad_w.mul_(scale).to(weight.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return total * scale

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_out if grad_h is not None else None,
                grad_w * grad_out if grad_w is not None else None, None, None, None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         rows: int | None = None, reduction: str = "mean") -> torch.Tensor:
    """Token-mean (or, with reduction="sum", summed) cross-entropy of `hidden @ weight.T` against `labels` (−100:
    no loss), never holding more than `rows` tokens' logits. Matmuls run in the autocast dtype when autocast is
    on, the softmax always in fp32. Under no_grad only the loss is computed."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else weight.dtype
    hidden, labels = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    rows = rows or chunk_rows(weight.shape[0], device_type)
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, labels, dtype, rows, reduction == "mean",
                                         torch.is_grad_enabled())


# transformers causal LMs whose forward returns the output layer's result as the logits, unchanged (read in
# their modeling code). Others post-process it — Gemma 2/3 soft-cap, Cohere and Granite scale the logits — and
# would apply that to the loss; they get the plain loss.
LOGITS_AS_IS = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2", "smollm3", "gemma"})


def fusable(head: nn.Module) -> bool:
    """A plain bias-free Linear nobody hooks: its output can be replaced by the loss."""
    return type(head) is nn.Linear and head.bias is None and not has_hooks(head)


@contextlib.contextmanager
def _head_returns_loss(head: nn.Linear, labels: torch.Tensor, reduction: str) -> Iterator[None]:
    from torch.distributed.tensor import DTensor  # here, not at module level: `megalang plan` imports this module

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        weight = head.weight  # read at call time: FSDP2 has just unsharded it
        if isinstance(weight, DTensor):  # vocab-sharded (tensor parallel): the plain loss over the DTensor
            return cross_entropy(F.linear(hidden, weight), labels, reduction)
        return linear_cross_entropy(hidden, weight, labels, reduction=reduction)

    head.forward = forward
    try:
        yield
    finally:
        del head.forward


def lm_loss(model: nn.Module, labels: torch.Tensor, *, reduction: str = "mean", **inputs) -> torch.Tensor:
    """Token-mean (or summed) next-token loss of a transformers causal LM on one batch (labels already shifted,
    −100: no loss). The model runs through its own `__call__` (so FSDP2 and DDP hooks fire) with its output
    layer returning the loss in place of the logits; evaluation (no_grad) gets the loss alone, so no
    `tokens × vocab` logits there either."""
    head = model.get_output_embeddings()
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if head is None or not fusable(head) or model_type not in LOGITS_AS_IS:
        return cross_entropy(model(**inputs).logits, labels, reduction)
    with _head_returns_loss(head, labels, reduction):
        return model(**inputs).logits
