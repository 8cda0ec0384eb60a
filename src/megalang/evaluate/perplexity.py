"""Token-level perplexity of a model on a shard split (disjoint windows over the packed token stream)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang import __version__
from megalang.artifacts import MANIFEST, sha256_file, write_json_atomic
from megalang.data.shards import TokenSplit, open_split, read_shard_manifest
from megalang.errors import UserError


@torch.no_grad()
def evaluate_perplexity(
    model: torch.nn.Module,
    split: TokenSplit,
    seq_len: int,
    batch_size: int = 8,
    max_batches: int | None = None,
) -> dict[str, float]:
    """Mean next-token NLL over windows of seq_len+1 tokens starting every seq_len tokens.

    Windows overlap by one token so every token after the first is predicted exactly once; the
    tail shorter than a full window is scored too, so the result covers the whole split.
    """
    if len(split) < 2:
        raise UserError("split has fewer than 2 tokens; nothing to score")
    starts = list(range(0, len(split) - 1, seq_len))
    if max_batches is not None:
        starts = starts[: max_batches * batch_size]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(starts), batch_size):
        batch = [split.window(s, min(seq_len + 1, len(split) - s)) for s in starts[i : i + batch_size]]
        for length in sorted({len(w) for w in batch}):  # only the last window can be shorter
            rows = torch.from_numpy(np.stack([w for w in batch if len(w) == length])).to(device)
            logits = model(input_ids=rows[:, :-1]).logits.float()
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), rows[:, 1:].reshape(-1), reduction="sum"
            )
            total_nll += nll.item()
            total_tokens += rows[:, 1:].numel()
    model.train(was_training)
    loss = total_nll / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2), "tokens": total_tokens}


def perplexity(
    model: str,
    data: str,
    split: str = "val",
    seq_len: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """`megalang eval perplexity`: load a run or export, score a shard split, optionally write JSON."""
    from megalang.model.load import load_model_for_inference

    if batch_size < 1 or (seq_len is not None and seq_len < 1) or (max_batches is not None and max_batches < 1):
        raise UserError("--batch-size, --seq-len and --max-batches must be positive")
    manifest = read_shard_manifest(data)
    loaded = load_model_for_inference(model)
    vocab = loaded.model.config.vocab_size
    if manifest["vocab_size"] > vocab:
        raise UserError(
            f"{data}: shards use a vocabulary of {manifest['vocab_size']} ids but the model has {vocab}; "
            "tokenize the data with the model's tokenizer"
        )
    seq_len = seq_len or _default_seq_len(loaded)
    result = evaluate_perplexity(loaded.model, open_split(data, split, manifest), seq_len, batch_size, max_batches)
    result = {
        "kind": "perplexity",
        "model": str(Path(model).resolve()),
        "data": str(Path(data).resolve()),
        "data_sha256": sha256_file(Path(data) / MANIFEST),
        "split": split,
        "settings": {"seq_len": seq_len, "batch_size": batch_size, "max_batches": max_batches},
        "megalang_version": __version__,
        **result,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)
    return result


def _default_seq_len(loaded) -> int:
    if loaded.kind == "run":
        from megalang.config import RunConfig, load_config

        return load_config(RunConfig, loaded.path / "config.yaml").train.seq_len
    return min(getattr(loaded.model.config, "max_position_embeddings", 1024), 1024)
