"""Log-likelihood scoring shared by every eval kind: lm-eval-harness's tokenisation, faster batching.

`Scorer` reproduces how lm-evaluation-harness (HFLM, causal backend) turns a (context, continuation) pair
into tokens and which logits it sums, so our numbers are the harness's numbers. It is faster because
(1) every distinct context runs through the model once, with all of its continuations (choices) in the same
row under a tree-shaped attention mask (or, for kernels without custom masks, from its repeated KV cache),
(2) logits are computed only where a token is scored, and (3) batches go longest first so padding stays small.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from megalang.errors import UserError

Pair = tuple[list[int], list[int]]  # (context ids, continuation ids)


@dataclass
class Scorer:
    """A causal LM and its tokenizer, with lm-eval's encoding rules and batched scoring."""

    model: Any
    tokenizer: Any
    batch_size: int = 16
    max_length: int | None = None  # longest model input; default: the model's positions (as lm-eval)
    # "tree": one pass per batch, each context followed by all its continuations under a 4D mask;
    # "cache": a context pass, then the continuations on its repeated KV cache (for attention kernels
    # that take no custom 4D mask, e.g. flash-attention). None: tree for sdpa/eager models.
    sharing: str | None = None
    _pad_id: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UserError(f"batch_size={self.batch_size}: must be >= 1")
        if self.max_length is None:
            self.max_length = int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self._pad_id = pad if pad is not None else (self.eot_id or 0)
        if self.sharing is None:
            impl = getattr(self.model.config, "_attn_implementation", None) or "eager"
            self.sharing = "tree" if impl in ("sdpa", "eager") else "cache"
        if self.sharing not in ("tree", "cache"):
            raise UserError(f"sharing={self.sharing}: expected tree or cache")
        self.model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def close(self) -> None:
        """Nothing to free here (the llama.cpp scorer frees its context)."""

    @property
    def eot_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    @property
    def prefix_id(self) -> int:
        return prefix_id(self.tokenizer)

    # --- tokenisation (lm-eval TemplateLM / HFLM rules) ---------------------------------------------

    def encode(self, text: str) -> list[int]:
        return encode(self.tokenizer, text)

    def encode_pair(self, context: str, continuation: str) -> Pair:
        return encode_pair(self.tokenizer, context, continuation)

    # --- scoring ------------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding would produce it) per request."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in requests])

    @torch.no_grad()
    def loglikelihood_tokens(self, pairs: Sequence[Pair]) -> list[tuple[float, bool]]:
        """Score token pairs; pairs with the same (truncated) context share one context forward pass."""
        groups: dict[tuple[int, ...], list[int]] = {}
        conts: list[list[int]] = []
        for i, (ctx, cont) in enumerate(pairs):
            ctx, cont = self._fit(ctx, cont)
            groups.setdefault(tuple(ctx), []).append(i)
            conts.append(cont)
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        # Longest context first: the first batch is the largest (memory errors show at once) and
        # contexts of similar length share a batch, so padding is small.
        order = sorted(groups, key=lambda c: (-len(c), c))
        for start in range(0, len(order), self.batch_size):
            batch = [(list(ctx), [(i, conts[i]) for i in groups[ctx]]) for ctx in order[start : start + self.batch_size]]
            score = self._score_tree if self.sharing == "tree" else self._score_batch
            for i, scored in score(batch):
                results[i] = scored
        return results  # type: ignore[return-value]

    def _fit(self, ctx: list[int], cont: list[int]) -> Pair:
        """Left-truncate context+continuation to max_length+1 tokens (lm-eval's rule); refuse a
        continuation that alone does not fit."""
        if not cont:
            raise UserError("a continuation encodes to zero tokens; every choice/label must be non-empty text")
        if len(cont) > self.max_length:
            raise UserError(f"a continuation of {len(cont)} tokens exceeds the model's max length {self.max_length}")
        if not ctx:
            ctx = [self.prefix_id]
        excess = len(ctx) + len(cont) - (self.max_length + 1)
        return (ctx[excess:] if excess > 0 else ctx), cont

    def _score_tree(self, batch: list[tuple[list[int], list[tuple[int, list[int]]]]]) -> Iterator[tuple[int, tuple[float, bool]]]:
        """One forward pass per batch: each row is a context followed by every continuation (minus its last
        token), with a 4D mask that lets a continuation see its context and itself but not its siblings,
        and positions that restart after the context for each continuation (so each is scored exactly as if
        it ran alone). Contexts are left-padded to end in one column, so only the last columns need logits.
        """
        dev = self.device
        width = max(len(ctx) for ctx, _ in batch)
        tail = max(sum(len(c) - 1 for _, c in items) for _, items in batch)
        total = width + tail
        ids = torch.full((len(batch), total), self._pad_id, dtype=torch.long)
        pos = torch.zeros((len(batch), total), dtype=torch.long)
        seg = torch.full((len(batch), total), -1, dtype=torch.long)  # -1 pad, 0 context, j+1 continuation j
        where: list[list[int]] = []  # per row: column where each continuation's inputs start
        for r, (ctx, items) in enumerate(batch):
            ids[r, width - len(ctx) : width] = torch.tensor(ctx)
            pos[r, width - len(ctx) : width] = torch.arange(len(ctx))
            seg[r, width - len(ctx) : width] = 0
            col, starts = width, []
            for j, (_, cont) in enumerate(items):
                n = len(cont) - 1
                starts.append(col)
                if n:
                    ids[r, col : col + n] = torch.tensor(cont[:-1])
                    pos[r, col : col + n] = len(ctx) + torch.arange(n)
                    seg[r, col : col + n] = j + 1
                col += n
            where.append(starts)
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=tree_mask(seg, self._mask_dtype()).to(dev), position_ids=pos.to(dev),
            logits_to_keep=tail + 1,
        ).logits
        logp = F.log_softmax(logits.float(), dim=-1)  # column k = width - 1 + k
        for r, (_, items) in enumerate(batch):
            for (i, cont), start in zip(items, where[r]):
                cols = [0] + [start - width + 1 + k for k in range(len(cont) - 1)]
                rows = logp[r, cols]
                targets = torch.tensor(cont, device=rows.device)
                ll = rows.gather(1, targets[:, None]).double().sum()
                yield i, (float(ll), bool((rows.argmax(-1) == targets).all()))

    def _mask_dtype(self) -> torch.dtype:
        # sdpa takes a boolean mask (a quarter of the memory); eager attention adds the mask to the scores.
        impl = getattr(self.model.config, "_attn_implementation", None)
        return torch.bool if impl == "sdpa" else next(self.model.parameters()).dtype

    def _score_batch(self, batch: list[tuple[list[int], list[tuple[int, list[int]]]]]) -> Iterator[tuple[int, tuple[float, bool]]]:
        """One forward pass over the contexts (left-padded), one over all continuations with the cache.

        The first continuation token is predicted by the context's last position; the rest by the
        continuation pass, whose rows attend to their own context through the repeated KV cache.
        """
        dev = self.device
        width = max(len(ctx) for ctx, _ in batch)
        ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (ctx, _) in enumerate(batch):
            ids[r, width - len(ctx) :] = torch.tensor(ctx)
            mask[r, width - len(ctx) :] = 1
        # Left padding keeps every context's last token in the last column; explicit positions keep
        # RoPE identical to an unpadded pass.
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev), use_cache=True, logits_to_keep=1
        )
        first = F.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
        rows = [(r, i, cont) for r, (_, items) in enumerate(batch) for i, cont in items]
        rest = self._continuation_logprobs(_cache_of(out), mask, rows, dev) if any(len(c) > 1 for _, _, c in rows) else {}
        for k, (r, i, cont) in enumerate(rows):
            lp = [first[r, cont[0]]]
            greedy = bool(first[r].argmax() == cont[0])
            if len(cont) > 1:
                logp = rest[k]  # [len(cont)-1, V]
                targets = torch.tensor(cont[1:], device=logp.device)
                lp.append(logp.gather(1, targets[:, None]).sum())
                greedy = greedy and bool((logp.argmax(-1) == targets).all())
            yield i, (float(sum(x.double() for x in lp)), greedy)

    def _continuation_logprobs(self, cache, ctx_mask: torch.Tensor, rows, dev) -> dict[int, torch.Tensor]:
        """Log-probs of continuation tokens 2..n for every row that has them (k → [n-1, V])."""
        need = [(k, r, cont) for k, (r, _, cont) in enumerate(rows) if len(cont) > 1]
        cache.reorder_cache(torch.tensor([r for _, r, _ in need], device=dev))
        width = max(len(cont) - 1 for _, _, cont in need)
        ids = torch.full((len(need), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(need), width), dtype=torch.long)
        ctx_len = ctx_mask.sum(-1)
        pos = torch.zeros((len(need), width), dtype=torch.long)
        for j, (_, r, cont) in enumerate(need):
            n = len(cont) - 1
            ids[j, :n] = torch.tensor(cont[:-1])
            mask[j, :n] = 1
            pos[j] = ctx_len[r] + torch.arange(width)
        full_mask = torch.cat([ctx_mask[[r for _, r, _ in need]], mask], dim=1)
        logits = self.model(
            input_ids=ids.to(dev), attention_mask=full_mask.to(dev), position_ids=pos.to(dev), **{_cache_kwarg(self.model): cache}
        ).logits
        return {k: F.log_softmax(logits[j, : len(cont) - 1].float(), dim=-1) for j, (k, _, cont) in enumerate(need)}

    # --- rolling windows (perplexity) ---------------------------------------------------------------

    def rolling_windows(self, tokens: list[int], window: int | None = None, stride: int | None = None) -> list[Pair]:
        """lm-eval's rolling windows (get_rolling_token_windows + make_disjoint_window).

        Every token is predicted exactly once. With stride == window (the default, lm-eval's
        context_len=1) windows are disjoint, and the last one gets full context; a smaller stride gives
        each window window-stride tokens of extra context (sliding-window perplexity).
        """
        window = window or self.max_length
        stride = stride or window
        if not 1 <= stride <= window:
            raise UserError(f"stride={stride}: must be between 1 and the window ({window})")
        return list(rolling_windows(tokens, self.prefix_id, window, window - stride + 1))

    def loglikelihood_rolling(
        self, docs: Sequence[list[int]], window: int | None = None, stride: int | None = None
    ) -> list[float]:
        """Sum of token log-likelihoods of each document (a token list), over rolling windows."""
        windows, owner = [], []
        for d, tokens in enumerate(docs):
            for w in self.rolling_windows(tokens, window, stride):
                windows.append(w)
                owner.append(d)
        totals = [0.0] * len(docs)
        for d, ll in zip(owner, self.score_sequences(windows), strict=True):
            totals[d] += ll
        return totals

    @torch.no_grad()
    def score_sequences(self, pairs: Sequence[Pair]) -> list[float]:
        """Sum log p(cont | ctx) for long, unshared pairs: one right-padded pass each, longest first,
        log-softmax only over the scored span (a window of 2048 x 49k vocab would not fit otherwise)."""
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        out = [0.0] * len(pairs)
        dev = self.device
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            seqs = [(pairs[i][0] + pairs[i][1])[-(self.max_length + 1) :][:-1] for i in idx]
            width = max(map(len, seqs))
            ids = torch.full((len(idx), width), self._pad_id, dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
            span_start = min(len(s) - len(pairs[i][1]) for s, i in zip(seqs, idx))
            logits = self.model(input_ids=ids.to(dev), logits_to_keep=torch.arange(span_start, width, device=dev)).logits
            for r, (s, i) in enumerate(zip(seqs, idx)):
                cont = pairs[i][1]
                rows = logits[r, len(s) - len(cont) - span_start : len(s) - span_start].float()
                logp = F.log_softmax(rows, dim=-1)
                out[i] = float(logp.gather(1, torch.tensor(cont, device=dev)[:, None]).double().sum())
        return out


def tree_mask(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, T, T] attention mask from segment ids (-1 pad, 0 shared context, j > 0 continuation j):
    causal, context visible to all, a continuation visible only to itself. A pad query sees only itself, so
    no row is fully masked (which would give NaN that could leak through the values)."""
    t = seg.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    valid_k = (seg >= 0)[:, None, :]
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    allowed = causal & valid_k & same & (seg >= 0)[:, :, None]
    allowed |= torch.eye(t, dtype=torch.bool)
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)


def _cache_kwarg(model) -> str:
    """transformers 5.x renamed `past_key_values` to `cache`; accept both generations of the API."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output) -> Any:
    cache = output.get("cache")
    return cache if cache is not None else output.past_key_values


def rolling_windows(tokens: list[int], prefix: int, max_seq_len: int, context_len: int) -> Iterator[Pair]:
    """lm-eval's `get_rolling_token_windows` followed by `make_disjoint_window`, as (context, predicted)."""
    if not tokens:
        return
    pred_len = max_seq_len - context_len + 1
    first = min(max_seq_len, len(tokens))
    yield [prefix], tokens[:first]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        ctx = tokens[max(end - max_seq_len - 1, 0) : end - 1]
        yield ctx[: len(ctx) - (n - 1)], tokens[end - n : end]
        predicted += n


# --- tokenisation (lm-eval TemplateLM / HFLM rules), also used to build classifier training rows ------------


def prefix_id(tokenizer) -> int:
    """The token an empty context is replaced by: BOS, else EOS (lm-eval's `prefix_token_id`)."""
    if tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has neither a BOS nor an EOS token; cannot score an empty context")
    return tokenizer.eos_token_id


def encode(tokenizer, text: str) -> list[int]:
    """The tokenizer's default special tokens, except none when the text already starts with BOS."""
    bos = tokenizer.bos_token
    kwargs = {"add_special_tokens": False} if bos and text.startswith(bos) else {}
    return list(tokenizer.encode(text, **kwargs))


def encode_pair(tokenizer, context: str, continuation: str) -> Pair:
    """Trailing spaces of the context move to the continuation; the continuation's ids are the tail of
    encode(context + continuation) after len(encode(context)) ids (so a merge across the boundary
    is scored as lm-eval scores it)."""
    if context == "":
        cont = list(tokenizer.encode(continuation, add_special_tokens=False))
        if cont and cont[0] == prefix_id(tokenizer):
            return cont[:1], cont[1:]
        return [prefix_id(tokenizer)], cont
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx) :]
