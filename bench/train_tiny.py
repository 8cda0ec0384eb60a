"""Training throughput of the `tiny` preset on this machine (the demo's shape), fp32 vs bf16 autocast.

Synthetic shards (random ids, vocab 8192); prints one JSON line: steps/s, tokens/s and MFU per precision.
Usage: python bench/train_tiny.py [steps] [micro_batch] [seq_len]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from megalang.artifacts import describe_input, sha256_file, write_manifest
from megalang.config import RunConfig
from megalang.data.shards import ShardWriter
from megalang.train.trainer import train

VOCAB = 8192


def synthetic_shards(root: Path, tokens: int) -> Path:
    tok = root / "tok"
    tok.mkdir(parents=True)
    (tok / "tokenizer.json").write_text("{}")
    write_manifest(tok, "tokenizer.train", {}, [], {})
    rng = np.random.default_rng(0)
    shards = root / "shards"
    shards.mkdir()
    splits = {}
    for split, n in (("train", tokens), ("val", tokens // 20)):
        writer = ShardWriter(shards, split, np.dtype(np.uint16), 1 << 24)
        for _ in range(n // 1000):
            writer.add(np.append(rng.integers(3, VOCAB, 999), 2))
        splits[split] = writer.close()
    write_manifest(shards, "data.tokenize", {}, [describe_input(tok)], {}, dtype="uint16", vocab_size=VOCAB,
                   eos_id=2, bos_id=1, pad_id=0, unk_id=None, tokenizer_sha256=sha256_file(tok / "manifest.json"),
                   tokenizer_path=str(tok), splits=splits)
    return shards


def main() -> None:
    steps, micro, seq = (int(a) for a in (sys.argv[1:] + ["12", "16", "256"][len(sys.argv) - 1:])[:3])
    results = {"preset": "tiny", "micro_batch": micro, "seq_len": seq, "steps": steps,
               "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp), 2_000_000)
        for precision in ("fp32", "bf16"):
            cfg = RunConfig.model_validate({
                "model": {"preset": "tiny"}, "data": {"shards": str(shards)},
                "train": {"max_steps": steps, "seq_len": seq, "micro_batch_size": micro, "log_every": 1,
                          "eval_batches": 1, "precision": precision, "progress": False, "device": "cpu"},
                "checkpoint": {"every": 0, "keep": 1}, "run": {"dir": f"{tmp}/run-{precision}"},
            })
            s = train(cfg)
            results[precision] = {"tokens_per_s": round(s["tokens_per_s"]),
                                  "steps_per_s": round(s["tokens_per_s"] / (micro * seq), 3),
                                  "mfu": round(s["mfu"], 4), "peak_flops": s["peak_flops"]}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
