"""`Scorer` for a GGUF file run in llama.cpp: the same lm-eval tokenisation and truncation rules (inherited), with
the log-likelihoods computed by llama.cpp one sequence at a time. Pairs that share a context run it once: the
KV cache of a common prefix is kept between calls (model/llamacpp.py token_logits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from megalang.errors import UserError
from megalang.evaluate.scoring import Pair, Scorer


@dataclass
class LlamaCppScorer(Scorer):
    """`model` is a `LlamaCppModel`, `tokenizer` its `LlamaCppTokenizer`; batch_size is kept for the result JSON."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size}: must be >= 1")
        self.max_length = min(self.max_length or self.model.n_ctx - 1, self.model.n_ctx - 1)
        self._pad_id = self.eot_id or 0

    @property
    def device(self) -> Any:
        return "cpu"

    def close(self) -> None:
        self.model.close()

    def loglikelihood_tokens(self, pairs: Sequence[Pair]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding gives it), context-sorted so that
        continuations of one context follow each other and reuse its cache."""
        from megalang.model.llamacpp import token_logprobs

        fitted = [self._fit(ctx, cont) for ctx, cont in pairs]
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        for i in sorted(range(len(pairs)), key=lambda i: fitted[i][0]):
            ctx, cont = fitted[i]
            rows = token_logprobs(self.model, ctx + cont, len(ctx) - 1)[:-1]
            targets = np.asarray(cont)
            ll = float(rows[np.arange(len(cont)), targets].sum())
            results[i] = (ll, bool((rows.argmax(-1) == targets).all()))
        return results  # type: ignore[return-value]

    def score_sequences(self, pairs: Sequence[Pair]) -> list[float]:
        """Sum log p(cont | ctx) per pair, left-truncated to max_length + 1 tokens as the transformers Scorer does."""
        from megalang.model.llamacpp import token_logprobs

        out = []
        for ctx, cont in pairs:
            seq = (ctx + cont)[-(self.max_length + 1) :][:-1]
            if len(seq) < len(cont):
                raise UserError(f"a continuation of {len(cont)} tokens does not fit the context of {self.model.n_ctx}")
            logp = token_logprobs(self.model, seq, len(seq) - len(cont))
            out.append(float(logp[np.arange(len(cont)), np.asarray(cont)].sum()))
        return out
