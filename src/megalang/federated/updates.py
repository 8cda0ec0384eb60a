"""What a site sends and what the server checks: the layout of the trainable tensors, flat update vectors,
clipping, FedAvg in float64, and the reasons an update is rejected.

A site's update is `trained − global` over its trainable tensors (LoRA adapters by default), in the order of
`model.named_parameters()`. In the clear it travels as one float32 array per tensor, so the server can check every
shape; encrypted, as CKKS ciphertexts of the flat vector (federated/crypto.py), of which the server can check only
the count and sizes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np

Layout = list[tuple[str, tuple[int, ...]]]

# What a site may tell the server beside its update (Flower metrics); anything else is rejected, so a site's
# records cannot leave its process by accident through the metrics dictionary.
SITE_METRICS = {"site": str, "layout_sha256": str, "base_sha256": str, "size": int, "loss": float, "steps": int,
                "examples": int, "update_norm": float, "clipped": int, "epsilon": float}


def layout_of(named: Sequence[tuple[str, object]]) -> Layout:
    """(name, shape) of each trainable tensor; Opacus' `_module.` prefix dropped so DP and non-DP sites agree."""
    return [(name.removeprefix("_module."), tuple(int(d) for d in p.shape)) for name, p in named]


def layout_sha256(layout: Layout) -> str:
    return hashlib.sha256(json.dumps([[n, list(s)] for n, s in layout]).encode()).hexdigest()


def layout_size(layout: Layout) -> int:
    return sum(math.prod(shape) for _, shape in layout)


def split(flat: np.ndarray, layout: Layout) -> list[np.ndarray]:
    """One array per tensor of `layout` (views of `flat`)."""
    out, at = [], 0
    for _, shape in layout:
        n = math.prod(shape)
        out.append(flat[at:at + n].reshape(shape))
        at += n
    return out


def concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The flat float64 vector of `arrays`."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays]) if arrays else np.zeros(0)


def clip(update: np.ndarray, max_norm: float) -> tuple[np.ndarray, float, bool]:
    """(update scaled to L2 norm ≤ max_norm, its norm before, whether it was scaled); max_norm 0: unchanged."""
    norm = float(np.linalg.norm(update))
    if max_norm <= 0 or norm <= max_norm:
        return update, norm, False
    return update * (max_norm / norm), norm, True


def payload_sha256(parameters: list[np.ndarray]) -> str:
    """SHA-256 over a message's arrays, as sent: the server's checkpoint and a site's log name the same bytes."""
    digest = hashlib.sha256()
    for array in parameters:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def to_wire(chunks: list[bytes]) -> list[np.ndarray]:
    """Ciphertexts as two arrays, their byte lengths and their bytes end to end: Flower moves one large array
    about twice as fast as hundreds of small ones (measured: 4 × 140 MB in 3.5 s against 7.9 s as 597 arrays)."""
    if not chunks:
        return []
    return [np.array([len(c) for c in chunks], dtype=np.int64), np.frombuffer(b"".join(chunks), dtype=np.uint8)]


def from_wire(arrays: list[np.ndarray]) -> list[bytes]:
    """The ciphertexts of `to_wire`'s two arrays; ValueError names what is malformed."""
    if not arrays:
        return []
    if len(arrays) != 2 or arrays[0].dtype != np.int64 or arrays[1].dtype != np.uint8 or arrays[0].ndim != 1:
        raise ValueError(f"expected ciphertext lengths (int64) and bytes (uint8), got {len(arrays)} arrays of "
                         f"{', '.join(str(a.dtype) for a in arrays)}")
    lengths, blob = arrays[0], np.ascontiguousarray(arrays[1]).tobytes()
    if (lengths <= 0).any() or int(lengths.sum()) != len(blob):
        raise ValueError(f"ciphertext lengths add up to {int(lengths.sum())} bytes, the message holds {len(blob)}")
    ends = np.cumsum(lengths)
    return [blob[end - n:end] for n, end in zip(lengths.tolist(), ends.tolist())]


def fedavg(updates: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ weights[k]·updates[k] in float64 (the weights are already normalised to sum to 1)."""
    total = np.zeros(updates[0].size, dtype=np.float64)
    for update, weight in zip(updates, weights):
        total += float(weight) * np.asarray(update, dtype=np.float64).ravel()
    return total


def normalised_weights(examples: Sequence[int], weighting: str) -> list[float]:
    """FedAvg's weights: each site's training examples over all of them, or 1/K each."""
    if weighting == "uniform":
        return [1.0 / len(examples)] * len(examples)
    total = sum(examples)
    return [n / total for n in examples]


# --- the server's checks --------------------------------------------------------------------------------


def check_metrics(metrics: dict) -> str | None:
    """The reason a site's metrics are refused, or None."""
    for key, value in metrics.items():
        kind = SITE_METRICS.get(key)
        if kind is None:
            return f"metric {key!r} is not one a site may send ({', '.join(sorted(SITE_METRICS))})"
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"metric {key!r} should be {kind.__name__}, not {type(value).__name__}"
    for key in ("site", "layout_sha256", "base_sha256", "size", "examples"):
        if key not in metrics:
            return f"metric {key!r} is missing"
    if metrics["examples"] < 1:
        return f"examples={metrics['examples']}: a site trains on at least one example"
    return None


def check_plain(arrays: Sequence[np.ndarray], layout: Layout, max_norm: float) -> str | None:
    """The reason a plaintext update is rejected (count, shapes, dtype, finiteness, clip norm), or None."""
    if len(arrays) != len(layout):
        return f"{len(arrays)} tensors, expected {len(layout)}"
    for array, (name, shape) in zip(arrays, layout):
        if tuple(array.shape) != shape:
            return f"{name}: shape {tuple(array.shape)}, expected {shape}"
        if not np.issubdtype(array.dtype, np.floating):
            return f"{name}: dtype {array.dtype}, expected floating point"
        if not np.isfinite(array).all():
            return f"{name}: non-finite values (NaN or Inf)"
    if max_norm > 0:
        norm = float(np.linalg.norm(concat(arrays)))
        if norm > max_norm * (1 + 1e-5):
            return f"update norm {norm:.6g} exceeds federated.dp_clip={max_norm:g}"
    return None
