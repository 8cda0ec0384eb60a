"""Training throughput of the `tiny` preset on this machine (the demo's shape), fp32 vs bf16 autocast.

Synthetic shards (random ids, vocab 8192); prints one JSON line: steps/s, tokens/s and MFU per precision.
Usage: python bench/train_tiny.py [steps] [micro_batch] [seq_len]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from _synthetic import synthetic_shards

from megalang.config import RunConfig
from megalang.train.trainer import train

VOCAB = 8192


def main() -> None:
    steps, micro, seq = (int(a) for a in (sys.argv[1:] + ["12", "16", "256"][len(sys.argv) - 1:])[:3])
    results = {"preset": "tiny", "micro_batch": micro, "seq_len": seq, "steps": steps,
               "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp), 2_000_000, VOCAB, 100_000, 1000)
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
