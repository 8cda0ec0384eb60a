"""The `data tokenize` stage vs calling the tokenizer library directly on the same documents.

Both use the same `tokenizers` (Rust) tokenizer and the same call, `encode_batch_fast` (ids without character
offsets), which encodes a batch in parallel over all cores. The direct call gets every text already in memory,
encodes them as one batch and reads each document's ids (`Encoding.ids`, the least any caller must do to use
the result; `direct_encode_only_seconds` leaves even that out); the stage also reads Parquet, routes train/val,
appends EOS, writes and hashes the shards and the manifest. The overhead of the stage is the price of all that.
Runs each `--repeats` times, alternating, and keeps the fastest of each. Prints one JSON line.

(Named tokenize_throughput.py, not tokenize.py: a bench/tokenize.py would shadow the standard library's
`tokenize` module for every script run from bench/.)

Usage: python bench/tokenize_throughput.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from megalang.config import PrepareConfig, TokenizeConfig, TokenizerTrainConfig
    from megalang.data.documents import iter_prepared
    from megalang.data.pipeline import prepare
    from megalang.data.tokenize import tokenize
    from megalang.data.tokenizer import load_tokenizer, train_tokenizer
    from megalang.demo import EXCLUDE, VAL_MODULES, stdlib_dir

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data, tok = root / "data", root / "tok"
        prepare(PrepareConfig(inputs=[str(stdlib_dir())], out=str(data), exclude=EXCLUDE))
        train_tokenizer(TokenizerTrainConfig(input=str(data), out=str(tok), vocab_size=8192))
        texts = [row["text"] for row in iter_prepared(data)]
        megabytes = sum(len(t.encode()) for t in texts) / 1e6

        tokenizer = load_tokenizer(tok)
        direct = encode_only = stage = float("inf")
        tokens = 0
        for i in range(args.repeats):
            started = time.perf_counter()
            encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            encoded = time.perf_counter()
            ids = [e.ids for e in encodings]
            direct, encode_only = min(direct, time.perf_counter() - started), min(encode_only, encoded - started)
            tokens = sum(len(x) for x in ids)
            del encodings, ids

            cfg = TokenizeConfig(input=str(data), tokenizer=str(tok), out=str(root / f"shards-{i}"), val_fraction=0,
                                 val_sources=VAL_MODULES)
            started = time.perf_counter()
            manifest = tokenize(cfg)
            stage = min(stage, time.perf_counter() - started)
        assert manifest["counts"]["tokens"] == tokens + len(texts), "the stage must encode exactly the same tokens (+ EOS)"

    print(json.dumps({
        "bench": "tokenize", "documents": len(texts), "megabytes": round(megabytes, 2), "tokens": tokens,
        "cpus": os.cpu_count(), "direct_seconds": round(direct, 3), "direct_encode_only_seconds": round(encode_only, 3),
        "stage_seconds": round(stage, 3),
        "direct_mb_per_s": round(megabytes / direct, 2), "stage_mb_per_s": round(megabytes / stage, 2),
        "overhead": round(stage / direct - 1, 4),
    }))


if __name__ == "__main__":
    main()
