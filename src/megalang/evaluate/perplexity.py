"""Perplexity: token-level on a shard split's packed stream, or per document over lm-eval's rolling windows
(token, word and byte perplexity, bits per byte) on text, JSONL or shards."""

from __future__ import annotations

import math
import re
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang import __version__
from megalang.data.shards import TokenSplit, open_split, read_shard_manifest
from megalang.errors import UserError
from megalang.jsonl import json_objects
from megalang.store.files import sha256_file, write_json_atomic
from megalang.store.manifest import MANIFEST
from megalang.train.loss import lm_loss


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
    starts = window_starts(split, seq_len, max_batches * batch_size if max_batches is not None else None)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for i in range(0, len(starts), batch_size):
        batch = [split.window(s, min(seq_len + 1, len(split) - s)) for s in starts[i : i + batch_size]]
        for length in sorted({len(w) for w in batch}):  # only the last window can be shorter
            rows = torch.from_numpy(np.stack([w for w in batch if len(w) == length])).to(device)
            total_nll += lm_loss(model, rows[:, 1:], reduction="sum", input_ids=rows[:, :-1]).item()
            total_tokens += rows[:, 1:].numel()
    model.train(was_training)
    return loss_summary(total_nll, total_tokens)


def loss_summary(total_nll: float, total_tokens: int) -> dict[str, float]:
    loss = total_nll / total_tokens
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2), "tokens": total_tokens}


def window_starts(split: TokenSplit, seq_len: int, max_windows: int | None = None) -> list[int]:
    """Where the windows of `evaluate_perplexity` start (every seq_len tokens; the first `max_windows`)."""
    return list(range(0, len(split) - 1, seq_len))[:max_windows]


def evaluate_perplexity_llamacpp(llm, split: TokenSplit, seq_len: int, max_windows: int | None = None) -> dict[str, float]:
    """`evaluate_perplexity` for a GGUF open in llama.cpp (model/llamacpp.py): the same windows and token ids, each
    window's first token given and the rest predicted; no BOS is added (shards hold EOS between documents, and
    the transformers path feeds the window as it is too)."""
    from megalang.model.llamacpp import sequence_nll

    if len(split) < 2:
        raise UserError("split has fewer than 2 tokens; nothing to score")
    total_nll, total_tokens = 0.0, 0
    for s in window_starts(split, seq_len, max_windows):
        nll, n, _ = sequence_nll(llm, split.window(s, min(seq_len + 1, len(split) - s)).tolist())
        total_nll += nll
        total_tokens += n
    return loss_summary(total_nll, total_tokens)


def perplexity(
    model: str,
    data: str,
    split: str = "val",
    seq_len: int | None = None,
    batch_size: int = 8,
    max_batches: int | None = None,
    out: str | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """`megalang eval perplexity`: load a run or export, score a shard split, optionally write JSON. `backend`:
    model/load.py choose_backend (a .gguf runs in llama.cpp unless `transformers`)."""
    from megalang.model.load import choose_backend, load_model_for_inference

    if batch_size < 1 or (seq_len is not None and seq_len < 1) or (max_batches is not None and max_batches < 1):
        raise UserError("--batch-size, --seq-len and --max-batches must be positive")
    manifest = read_shard_manifest(data)
    backend, path = choose_backend(model, backend)
    tokens = open_split(data, split, manifest)
    if backend == "llama.cpp":
        from megalang.model.llamacpp import gguf_context_length, load_llamacpp

        seq_len = seq_len or min(gguf_context_length(path), 1024)
        with load_llamacpp(path, n_ctx=seq_len + 1) as llm:
            _check_vocab(data, manifest, llm.vocab_size)
            result = evaluate_perplexity_llamacpp(llm, tokens, seq_len, max_batches * batch_size if max_batches else None)
    else:
        loaded = load_model_for_inference(path)
        _check_vocab(data, manifest, loaded.model.config.vocab_size)
        seq_len = seq_len or _default_seq_len(loaded)
        result = evaluate_perplexity(loaded.model, tokens, seq_len, batch_size, max_batches)
    result = {
        "kind": "perplexity",
        "model": str(Path(model).resolve()),
        "data": str(Path(data).resolve()),
        "data_sha256": sha256_file(Path(data) / MANIFEST),
        "split": split,
        "settings": {"seq_len": seq_len, "batch_size": batch_size, "max_batches": max_batches, "backend": backend},
        "megalang_version": __version__,
        **result,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)
    return result


def _check_vocab(data: str, manifest: dict[str, Any], vocab: int) -> None:
    if manifest["vocab_size"] > vocab:
        raise UserError(
            f"{data}: shards use a vocabulary of {manifest['vocab_size']} ids but the model has {vocab}; "
            "tokenize the data with the model's tokenizer"
        )


def _default_seq_len(loaded) -> int:
    if loaded.kind == "llama.cpp":
        return min(loaded.model.n_ctx - 1, 1024)
    if loaded.kind == "run":
        from megalang.config import RunConfig, load_config
        from megalang.store.run_dir import RunDir

        return load_config(RunConfig, RunDir(loaded.path).config).train.seq_len
    return min(getattr(loaded.model.config, "max_position_embeddings", 1024), 1024)


# --- per-document rolling perplexity (lm-eval's loglikelihood_rolling) ------------------------------


def count_words(text: str) -> int:
    """lm-eval's word count for word perplexity: pieces between runs of whitespace."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    return len(text.encode("utf-8"))


def rolling_metrics(loglikelihoods: list[float], tokens: list[int], texts: list[str]) -> dict[str, float]:
    """Token, word and byte perplexity and bits per byte of a corpus, weighted as lm-eval weights them:
    the summed log-likelihood over the summed count (not a mean of per-document values)."""
    ll = sum(loglikelihoods)
    n_tok, n_words, n_bytes = sum(tokens), sum(map(count_words, texts)), sum(map(count_bytes, texts))
    return {
        "token_perplexity": math.exp(-ll / n_tok),
        "word_perplexity": math.exp(-ll / n_words),
        "byte_perplexity": math.exp(-ll / n_bytes),
        "bits_per_byte": -ll / n_bytes / math.log(2),
        "loglikelihood": ll,
        "tokens": n_tok,
        "words": n_words,
        "bytes": n_bytes,
        "documents": len(texts),
    }


def read_documents(data: str, text_field: str = "text") -> list[str]:
    """Documents of a .txt file (the whole file is one document) or a JSONL file (one per line)."""
    path = Path(data)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a .txt or .jsonl file, or a shard folder")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    if path.suffix != ".jsonl":
        if not text:
            raise UserError(f"{path}: empty file; nothing to score")
        return [text]
    docs = []
    for n, record in json_objects(text.splitlines(), path):
        if not isinstance(record.get(text_field), str) or not record[text_field]:
            raise UserError(f"{path}:{n}: needs a non-empty string field '{text_field}' (set --text-field)")
        docs.append(record[text_field])
    if not docs:
        raise UserError(f"{path}: no documents")
    return docs


def rolling_perplexity(scorer, texts: list[str], window: int | None = None, stride: int | None = None, token_docs: list[list[int]] | None = None) -> dict[str, Any]:
    """Score each document over rolling windows; `token_docs` (already tokenized, e.g. from shards) skips encoding."""
    docs = token_docs if token_docs is not None else [scorer.encode(t) for t in texts]
    if any(not d for d in docs):
        raise UserError("a document encodes to zero tokens; remove empty documents")
    lls = scorer.loglikelihood_rolling(docs, window, stride)
    result = rolling_metrics(lls, [len(d) for d in docs], texts)
    result["per_document"] = [{"loglikelihood": ll, "tokens": len(d)} for ll, d in zip(lls, docs)]
    return result


def shard_documents(data: str, split: str, tokenizer, max_docs: int | None) -> tuple[list[list[int]], list[str]]:
    """Token lists and decoded texts (for word/byte counts) of a shard split's documents."""
    docs = []
    for doc in open_split(data, split, read_shard_manifest(data)).documents():
        docs.append(doc.tolist())
        if max_docs and len(docs) >= max_docs:
            break
    if not docs:
        raise UserError(f"{data}: split '{split}' has no documents")
    return docs, [tokenizer.decode(d, skip_special_tokens=True) for d in docs]


def evaluate_rolling(
    model: str,
    data: str,
    out: str | None = None,
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    text_field: str = "text",
    split: str = "val",
    max_docs: int | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """`megalang eval perplexity --mode rolling`: per-document perplexity on text, JSONL or shards."""
    from megalang.evaluate.common import load_scorer, result_header, write_result

    loaded, scorer = load_scorer(model, batch_size, max_length=window, backend=backend)
    with closing(scorer):
        window = window or _default_seq_len(loaded)
        if Path(data).is_dir():
            tokens, texts = shard_documents(data, split, loaded.tokenizer, max_docs)
        else:
            tokens, texts = None, read_documents(data, text_field)[: max_docs or None]
        metrics = rolling_perplexity(scorer, texts, window, stride, tokens)
    settings = {"mode": "rolling", "window": window, "stride": stride or window, "batch_size": batch_size,
                "split": split if tokens else None, "backend": loaded.kind if loaded.kind == "llama.cpp" else "transformers"}
    return write_result(out, {**result_header("perplexity", model, data, settings), **metrics})
