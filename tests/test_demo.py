"""demo.py: the `make demo` driver end to end on a few standard-library files (debug preset, a few steps): every
stage runs, the summary it prints and writes holds sane values, and a re-run reuses the finished stages."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from megalang.demo import PROMPT, demo

pytestmark = pytest.mark.slow

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Training files, and held-out ones that match demo.VAL_MODULES (json/, csv.py, textwrap.py, heapq.py, shlex.py).
MODULES = ["argparse.py", "string.py", "fnmatch.py", "glob.py", "copy.py", "pprint.py", "queue.py", "bisect.py",
           "json/__init__.py", "json/decoder.py", "csv.py", "textwrap.py", "heapq.py", "shlex.py"]
STEPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo-corpus")
    for rel in MODULES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STDLIB / rel, root / rel)
    return root


def test_demo_on_a_few_files_prints_and_writes_a_sane_summary(corpus, tmp_path, capsys):
    out = tmp_path / "demo"
    result = demo(out, max_steps=STEPS, preset="debug", corpus=corpus, vocab_size=600)
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result))
    assert summary["steps"] == STEPS and summary["tokens_seen"] == STEPS * 16 * 256  # the demo recipe's batch
    assert 0 < summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["tokens_per_s"] > 0 and 0 < summary["mfu"] < 1
    assert summary["val_tokens_scored"] > 0
    assert 1 < summary["val_perplexity"] < summary["val_perplexity_untrained"]
    assert summary["val_perplexity_untrained"] > 0.5 * 600  # an untrained model is about uniform over the vocabulary
    assert summary["total_params"] == summary["trainable_params"] > 0
    assert set(summary["stage_seconds"]) == {"prepare", "tokenizer", "tokenize", "train"}
    assert summary["demo_wall_seconds"] >= sum(summary["stage_seconds"].values())
    assert summary["sample"].startswith(PROMPT) and len(summary["sample"]) > len(PROMPT)
    assert summary["export_dir"] == str(out / "export") and (out / "export" / "model.safetensors").is_file()
    for label in ("tokens seen", "train loss", "val perplexity", "export", "demo wall time", "sample:"):
        assert label in printed

    again = demo(out, max_steps=STEPS, preset="debug", corpus=corpus, vocab_size=600)
    printed = capsys.readouterr().out
    assert all(f"[{stage}] reusing" in printed for stage in ("prepare", "tokenizer", "tokenize"))
    assert again["steps"] == STEPS and again["val_perplexity"] == pytest.approx(summary["val_perplexity"])
