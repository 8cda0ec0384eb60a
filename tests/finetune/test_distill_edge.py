"""recipes/distill-edge.yaml as docs/export.md "Distil for the edge" runs it, through the CLI: chats tokenized with
SmolLM2's tokenizer → the recipe's tiny-preset student distilled from SmolLM2-135M-Instruct (a few steps) → a q8_0
GGUF → generation in llama.cpp; the release names its lineage back to the chat file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import PLANTED, QUESTIONS, write_jsonl

sys.path.insert(0, str(Path(__file__).parents[1]))
from tiny_pipeline import cli  # noqa: E402

RECIPE = Path(__file__).parents[2] / "recipes" / "distill-edge.yaml"


def ok(*args) -> list[str]:
    code, lines, crash = cli(*args)
    assert code == 0 and crash is None, (args, lines[-5:], crash)
    return lines


def test_distill_edge_sequence(smol_hf, tmp_path):
    chats = write_jsonl(tmp_path / "train.jsonl", [{"prompt": q, "completion": PLANTED} for q in QUESTIONS * 4])
    ok("data", "tokenize", "--format", "sft", "-i", chats, "--tokenizer", smol_hf, "-o", tmp_path / "shards")
    ok("train", RECIPE, f"data.shards={tmp_path / 'shards'}", f"distill.teacher={smol_hf}", f"run.dir={tmp_path / 'run'}",
       "train.max_steps=4", "train.seq_len=64", "train.micro_batch_size=2", "train.eval_every=0", "schedule.warmup_steps=1",
       "checkpoint.every=0", "metrics.report=false", "metrics.system=false", "train.progress=false")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 27_000_000 < summary["total_params"] < 30_000_000  # the recipe's student: tiny preset, SmolLM2's vocabulary
    ok("export", "--run", tmp_path / "run", "--format", "gguf", "--quant", "q8_0", "--out", tmp_path / "edge")
    gguf = tmp_path / "edge" / "model-q8_0.gguf"
    # q8_0: 34 bytes per 32 weights, norms in f32; header and vocabulary add ~1-2 MB
    assert summary["total_params"] * 34 / 32 < gguf.stat().st_size < summary["total_params"] * 34 / 32 + 3_000_000
    lines = ok("generate", "--model", gguf, "--prompt", QUESTIONS[0], "--max-new-tokens", "8", "--temperature", "0")
    assert lines[-1].startswith(QUESTIONS[0]) and len(lines[-1]) > len(QUESTIONS[0])  # (llama.cpp may warn first)
    chain = json.loads("\n".join(ok("lineage", tmp_path / "edge", "--json")))
    assert [node["stage"] for node in chain[:3]] == ["export", "train", "data.tokenize"]
    assert chain[2]["raw_inputs"] == 1  # the chat file
    assert (tmp_path / "edge" / "README.md").is_file() and (tmp_path / "edge" / "bom.cdx.json").is_file()
