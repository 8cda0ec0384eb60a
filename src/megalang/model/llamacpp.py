"""A GGUF file run through llama.cpp (llama-cpp-python): loading, per-position log-probabilities of a token
sequence (perplexity, evals) and generation (greedy or seeded sampling).

Token ids are passed in, never text: callers tokenise as they do for transformers (the GGUF's own tokenizer,
`LlamaCppTokenizer`, gives the same ids as the Hugging Face one, tests/export/test_gguf.py), so both backends
score exactly the same sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.errors import UserError


@dataclass
class LlamaCppModel:
    """An open llama.cpp context; `close()` frees it (models of several GB should not wait for the GC)."""

    llm: Any  # llama_cpp.Llama
    path: Path
    n_ctx: int

    @property
    def vocab_size(self) -> int:
        return self.llm.n_vocab()

    @property
    def eos_id(self) -> int:
        return self.llm.token_eos()

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> LlamaCppModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_llamacpp(path: str | Path, n_ctx: int | None = None, logits_all: bool = True, n_threads: int | None = None) -> LlamaCppModel:
    """Open a .gguf on CPU. `n_ctx` defaults to the file's training context, capped at 4096 (2048 with `logits_all`,
    which keeps every position's logits for scoring: n_ctx × vocab floats); generation needs no `logits_all`."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".gguf":
        raise UserError(f"{path}: no such .gguf file; pass a file written by `megalang export --format gguf`")
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise UserError(f"{path}: running GGUF in llama.cpp needs llama-cpp-python ({e}); pip install 'megalang[gguf]'") from None
    threads = n_threads or os.cpu_count() or 1
    try:
        llm = Llama(str(path), n_ctx=n_ctx or 0, n_batch=512, logits_all=logits_all, n_threads=threads,
                    n_threads_batch=threads, verbose=False)
    except ValueError as e:  # llama-cpp-python reports every load failure as ValueError
        raise UserError(f"{path}: llama.cpp cannot load it ({str(e).splitlines()[0]})") from None
    cap = 2048 if logits_all else 4096
    if not n_ctx and llm.n_ctx() > cap:
        llm.close()
        return load_llamacpp(path, cap, logits_all, n_threads)
    return LlamaCppModel(llm, path, llm.n_ctx())


def gguf_context_length(path: str | Path) -> int:
    """The training context a GGUF file states (`<arch>.context_length`; 2048 when it states none)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = reader.get_field("general.architecture").contents()
    field = reader.get_field(f"{arch}.context_length")
    return int(field.contents()) if field is not None else 2048


def token_logits(model: LlamaCppModel, tokens: list[int]) -> np.ndarray:
    """[len(tokens), vocab] float32 logits: row i predicts tokens[i + 1]. A prefix shared with the previous call is
    not recomputed (its KV cache and logits are kept), so scoring several continuations of one context is cheap."""
    llm = model.llm
    if not tokens:
        raise UserError("nothing to score: an empty token sequence")
    if len(tokens) > model.n_ctx:
        raise UserError(f"{model.path}: a sequence of {len(tokens)} tokens exceeds the context of {model.n_ctx}; "
                        "use a shorter --seq-len/--window")
    if not llm._logits_all:
        raise ValueError("token_logits needs a model loaded with logits_all=True")
    keep = 0
    for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), tokens[:-1]):  # never all of it: the last row is redone
        if a != b:
            break
        keep += 1
    llm.n_tokens = keep  # eval() drops the KV cache from here on
    llm.eval(tokens[keep:])
    return llm.scores[: len(tokens)]


def token_logprobs(model: LlamaCppModel, tokens: list[int], first: int = 0) -> np.ndarray:
    """[len(tokens) - first, vocab] float64 log-softmax of `token_logits` rows first.. (only the rows asked for:
    a 1024-token window over a 49k vocabulary would be 400 MB in float64)."""
    logits = token_logits(model, tokens)[first:].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def sequence_nll(model: LlamaCppModel, tokens: list[int], start: int = 1) -> tuple[float, int, np.ndarray]:
    """(summed NLL of tokens[start:], their count, the argmax prediction at each of those positions)."""
    rows = token_logprobs(model, tokens, start - 1)[:-1]
    targets = np.asarray(tokens[start:])
    return float(-rows[np.arange(len(targets)), targets].sum()), len(targets), rows.argmax(-1)


def generate_ids(model: LlamaCppModel, ids: list[int], max_new_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 50, top_p: float = 0.95, seed: int = 0, eos_id: int | None = None) -> list[int]:
    """The new token ids after `ids` (stopping at `eos_id`, default the file's EOS). Temperature 0 is greedy; the
    sampler otherwise is top-k → top-p → temperature with `seed`, and no min-p or repetition penalty (as the
    transformers path)."""
    llm = model.llm
    eos = model.eos_id if eos_id is None else eos_id
    if len(ids) + max_new_tokens > model.n_ctx:
        raise UserError(f"{model.path}: {len(ids)} prompt + {max_new_tokens} new tokens exceed the context of {model.n_ctx}")
    llm.set_seed(seed)
    new: list[int] = []
    for token in llm.generate(ids, top_k=top_k or 0, top_p=top_p, min_p=0.0, temp=temperature, repeat_penalty=1.0,
                              reset=True):
        if token == eos:
            break
        new.append(token)
        if len(new) >= max_new_tokens:
            break
    return new


class LlamaCppTokenizer:
    """The GGUF's own tokenizer with the few Hugging Face tokenizer members megalang's evals use.

    Special-token text ("</s>", "<|im_start|>") in the input: megalang's own tokenizers (SentencePiece, the "llama"
    vocabulary here) read it as plain text (split_special_tokens), pretrained Hugging Face ones (byte-level BPE,
    "gpt2") parse it as the token; GGUF has no key for this, so the vocabulary type decides, as each does in
    transformers."""

    def __init__(self, model: LlamaCppModel):
        self._llm = model.llm
        self.parse_special = model.llm.metadata.get("tokenizer.ggml.model") != "llama"
        self.bos_token_id = _valid(self._llm.token_bos())
        self.eos_token_id = _valid(self._llm.token_eos())
        self.pad_token_id = self.eos_token_id
        self.bos_token = self._piece(self.bos_token_id)
        self.eos_token = self._piece(self.eos_token_id)

    def _piece(self, token: int | None) -> str | None:
        return None if token is None else self._llm.detokenize([token], special=True).decode("utf-8", "replace")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """BOS only where the file says the tokenizer adds it (tokenizer.ggml.add_bos_token)."""
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=self.parse_special)

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._llm.detokenize(list(ids), special=not skip_special_tokens).decode("utf-8", "replace")

    def __len__(self) -> int:
        return self._llm.n_vocab()


def _valid(token: int) -> int | None:
    return token if token is not None and token >= 0 else None
