"""The output layer + loss alone: megalang's chunked linear cross-entropy vs logits + F.cross_entropy.

Forward and backward of `hidden @ weightᵀ` and the token-mean cross-entropy, for the `tiny` demo's shape by
default (4,096 tokens, hidden 256, vocabulary 8,192), fp32 and bf16 autocast, at several chunk sizes. The peer
is what HF's loss and a bare loop do: the full logits, an fp32 upcast, `F.cross_entropy`. Best of `--repeats`
after two warm-up calls; the largest relative difference of the loss and both gradients is reported, so
nobody wins by computing something else. Evaluation (the summed loss under no_grad, default chunk size) is
timed the same way. Prints one JSON line.

Usage: python bench/loss_head.py [--tokens 4096] [--hidden 256] [--vocab 8192] [--rows 128,256,512,1024]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F

from megalang.train.loss import chunk_rows, linear_cross_entropy


def best_of(fn, repeats: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rows", default="128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.tokens, args.hidden, generator=g)
    weight = torch.randn(args.vocab, args.hidden, generator=g) * 0.02
    labels = torch.randint(0, args.vocab, (args.tokens,), generator=g)
    result: dict = {"bench": "loss_head", "tokens": args.tokens, "hidden": args.hidden, "vocab": args.vocab,
                    "default_rows_cpu": chunk_rows(args.vocab, "cpu"), "torch_threads": torch.get_num_threads(),
                    "plain_logits_bytes_fp32": args.tokens * args.vocab * 4}
    for precision in ("fp32", "bf16"):
        def autocast():
            return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

        def run(loss_fn):
            h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
            with autocast():
                loss = loss_fn(h, w)
            loss.backward()
            return loss.detach(), h.grad, w.grad

        def plain(h, w):
            return F.cross_entropy((h @ w.T).float(), labels)

        reference = run(plain)
        entry = {"plain_ms": round(best_of(lambda: run(plain), args.repeats) * 1e3, 1), "chunked_ms": {},
                 "max_relative_difference": {}}
        for rows in (int(r) for r in args.rows.split(",")):
            def chunked(h, w, rows=rows):
                return linear_cross_entropy(h, w, labels, rows=rows)

            ours = run(chunked)
            entry["chunked_ms"][rows] = round(best_of(lambda: run(chunked), args.repeats) * 1e3, 1)
            entry["max_relative_difference"][rows] = max(
                float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, reference))

        def evaluate(loss_fn):  # what evaluation runs: the summed loss under no_grad
            with torch.no_grad(), autocast():
                return loss_fn(hidden, weight)

        def plain_sum(h, w):
            return F.cross_entropy((h @ w.T).float(), labels, reduction="sum")

        def chunked_sum(h, w):
            return linear_cross_entropy(h, w, labels, reduction="sum")

        entry["eval_plain_ms"] = round(best_of(lambda: evaluate(plain_sum), args.repeats) * 1e3, 1)
        entry["eval_chunked_ms"] = round(best_of(lambda: evaluate(chunked_sum), args.repeats) * 1e3, 1)
        plain_loss = evaluate(plain_sum)
        entry["eval_relative_difference"] = float((evaluate(chunked_sum) - plain_loss).abs() / plain_loss.abs())
        result[precision] = entry
    print(json.dumps(result))


if __name__ == "__main__":
    main()
