"""What `train.document_mask` costs: training throughput of the `tiny` preset (fp32, the demo's shape) with packed
windows attending across documents (the default) and only within them, in one run. One JSON line.

Usage: python bench/document_mask.py [steps] [doc_tokens]      (default 12 steps, 300-token documents)

Synthetic shards (random ids, vocab 8192) whose documents are `doc_tokens` long, so a 256-token window holds one
or two boundaries. Under the mask, transformers builds a block-diagonal causal mask from the restarted position ids
and runs SDPA with that explicit mask instead of its implicit causal path; that is the cost measured here.
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

VOCAB, MICRO, SEQ = 8192, 16, 256


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    doc_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    results = {"bench": "document_mask", "preset": "tiny", "micro_batch": MICRO, "seq_len": SEQ, "steps": steps,
               "doc_tokens": doc_tokens, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp), 2_000_000, VOCAB, 100_000, doc_tokens)
        for masked in (False, True):
            cfg = RunConfig.model_validate({
                "model": {"preset": "tiny"}, "data": {"shards": str(shards)},
                "train": {"max_steps": steps, "seq_len": SEQ, "micro_batch_size": MICRO, "log_every": 1,
                          "eval_batches": 1, "progress": False, "device": "cpu", "document_mask": masked},
                "checkpoint": {"every": 0, "keep": 1}, "run": {"dir": f"{tmp}/run-{masked}"},
            })
            s = train(cfg)
            results["within_documents" if masked else "across_documents"] = {
                "tokens_per_s": round(s["tokens_per_s"]), "val_loss": round(s["val_loss"], 4)}
    rates = results["within_documents"]["tokens_per_s"], results["across_documents"]["tokens_per_s"]
    results["cost"] = round(1 - rates[0] / rates[1], 3)  # the share of throughput the mask takes
    print(json.dumps(results))


if __name__ == "__main__":
    main()
