"""Run an ONNX export folder (`megalang export --format onnx`) with ONNX Runtime: next-token logits and a generate loop
(greedy or temperature / top-k / top-p sampling with a seed, stopping at EOS) that reuses the exported KV cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from megalang.errors import UserError

MODEL_FILE = "model.onnx"


def is_onnx_folder(path: str | os.PathLike) -> bool:
    """An ONNX export: model.onnx and a manifest whose format is onnx."""
    path = Path(path)
    if not (path.is_dir() and (path / MODEL_FILE).is_file() and (path / "manifest.json").is_file()):
        return False
    try:
        return json.loads((path / "manifest.json").read_text()).get("format") == "onnx"
    except (OSError, ValueError):
        return False


class OnnxModel:
    """An ONNX Runtime session over the folder's model.onnx, its config.json and its tokenizer."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        try:
            self.session = ort.InferenceSession(str(self.folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
            self.config = json.loads((self.folder / "config.json").read_text())
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        except (OSError, ValueError) as e:
            raise UserError(f"{self.folder}: cannot load as an ONNX export ({str(e).splitlines()[0]}); re-export it") from None
        except Exception as e:  # onnxruntime reports a damaged graph as its own error types
            if type(e).__module__.startswith("onnxruntime"):
                raise UserError(f"{self.folder / MODEL_FILE}: ONNX Runtime cannot load it ({str(e).splitlines()[0]}); "
                                "re-export the model") from None
            raise
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def empty_past(self, batch: int) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32) for i in self.past}

    def forward(self, input_ids: np.ndarray, past: dict[str, np.ndarray] | None = None):
        """(logits [batch, sequence, vocab], the cache for the next call) after `input_ids` following `past`."""
        batch, seq = input_ids.shape
        past = past if past is not None else self.empty_past(batch)
        start = next(iter(past.values())).shape[2] if past else 0
        feed = {"input_ids": input_ids.astype(np.int64),
                "attention_mask": np.ones((batch, start + seq), np.int64),
                "position_ids": np.broadcast_to(np.arange(start, start + seq, dtype=np.int64), (batch, seq)).copy(),
                **past}
        logits, *present = self.session.run(self.outputs, feed)
        return logits, {i.name: t for i, t in zip(self.past, present)}

    def logits(self, input_ids) -> np.ndarray:
        """Next-token logits [batch, sequence, vocab] of whole sequences (no cache carried over)."""
        return self.forward(np.asarray(input_ids))[0]

    def generate_ids(self, ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                     top_p: float = 1.0, seed: int = 0, eos: int | None = None, use_cache: bool = True) -> list[int]:
        """`ids` followed by up to `max_new_tokens` tokens (fewer when EOS comes; EOS itself is kept).
        Without `use_cache` every step re-reads the whole sequence (the slow reference path)."""
        rng = np.random.default_rng(seed)
        ids = list(ids)
        logits, past = self.forward(np.array([ids]))
        for _ in range(max_new_tokens):
            token = pick_token(logits[0, -1], temperature, top_k, top_p, rng)
            ids.append(token)
            if token == eos:
                break
            if use_cache:
                logits, past = self.forward(np.array([[token]]), past)
            else:
                logits, _ = self.forward(np.array([ids]))
        return ids


def pick_token(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    """Greedy when temperature is 0; otherwise sample after temperature, top-k and top-p (nucleus) filtering, in the
    order transformers applies them."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scores = logits.astype(np.float64) / temperature
    if 0 < top_k < scores.size:
        kth = np.partition(scores, -top_k)[-top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = cumulative - probs[order] < top_p  # the smallest set whose mass reaches top_p (always >= 1 token)
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(probs.size, p=probs))


def generate_onnx(folder: str | os.PathLike, prompt: str, max_new_tokens: int = 128, temperature: float = 0.8,
                  top_k: int = 50, top_p: float = 0.95, seed: int = 0) -> str:
    """The prompt and its continuation, as megalang.generate.generate_text makes them with transformers."""
    model = OnnxModel(folder)
    eos = model.config.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos
    # Training saw every document right after an EOS separator, so the prompt starts the same way (generate.py).
    ids = [eos] + model.tokenizer.encode(prompt, add_special_tokens=False)
    out = model.generate_ids(ids, max_new_tokens, temperature, top_k, top_p, seed, eos)
    return model.tokenizer.decode(out[1:], skip_special_tokens=True)
