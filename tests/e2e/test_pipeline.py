"""The whole pipeline through the real CLI on a small corpus of real Python source, debug preset:
prepare → tokenizer → tokenize → train (killed with SIGKILL after a checkpoint, then resumed) → eval →
export → load in plain transformers (megalang not importable) → generate → verify → lineage.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MEGALANG = [sys.executable, "-m", "megalang"]
STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["argparse.py", "textwrap.py", "heapq.py", "shlex.py", "fractions.py", "json/decoder.py",
           "json/encoder.py", "json/__init__.py", "csv.py", "string.py", "bisect.py", "glob.py", "fnmatch.py",
           "copy.py", "abc.py", "pprint.py", "queue.py", "sched.py", "colorsys.py", "keyword.py"]
TRAIN = ["model.preset=debug", "train.seq_len=64", "train.micro_batch_size=8", "train.max_steps=24",
         "schedule.warmup_steps=4", "optimizer.lr=3e-3", "train.log_every=2", "train.eval_batches=4",
         "checkpoint.every=6", "checkpoint.keep=2", "train.progress=false"]


def cli(*args, check=True, env=None, timeout=600):
    result = subprocess.run([*MEGALANG, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"megalang {' '.join(map(str, args))} exited {result.returncode}:\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    corpus = root / "corpus"
    for rel in MODULES:
        dst = corpus / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STDLIB / rel, dst)
    cli("data", "prepare", "--input", corpus, "--out", root / "data")
    cli("tokenizer", "train", "--input", root / "data", "--out", root / "tok", "--vocab-size", 600)
    cli("data", "tokenize", "--input", root / "data", "--tokenizer", root / "tok", "--out", root / "shards",
        "--val-source", "*/json/*")
    return root


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before {path} appeared: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def test_train_killed_and_resumed_then_eval_export_load_in_transformers_generate(work):
    """One chain: each stage needs the one before it, and a test split off on another xdist worker would find
    nothing to check."""
    run = work / "run"
    args = ["train", *TRAIN, f"data.shards={work / 'shards'}", f"run.dir={run}"]
    proc = subprocess.Popen([*MEGALANG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run / "checkpoints" / "step-12" / "COMPLETE.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()

    resumed = cli(*args)
    assert "resum" in (resumed.stdout + resumed.stderr).lower()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 24 and summary["train_loss_last"] < summary["train_loss_first"]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 24
    assert sorted(os.listdir(run / "checkpoints")) == ["step-18", "step-24"]

    ppl = json.loads(cli("eval", "perplexity", "--model", run, "--data", work / "shards",
                         "--out", work / "ppl.json").stdout)
    assert ppl["tokens"] > 0 and 1 < ppl["perplexity"] < 600
    assert json.loads((work / "ppl.json").read_text())["perplexity"] == ppl["perplexity"]

    cli("export", "--run", run, "--out", work / "export")
    names = set(os.listdir(work / "export"))
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "manifest.json"} <= names
    assert_export_loads_in_plain_transformers_with_the_same_logits(run, work / "export", work / "plain.pt")

    text = cli("generate", "--model", work / "export", "--prompt", "def ", "--max-new-tokens", 20, "--seed", 1).stdout
    assert text.startswith("def ") and len(text) > 4
    assert cli("verify", work / "export").returncode == 0
    stages = [line.split()[0] for line in cli("lineage", work / "export").stdout.splitlines()]
    assert stages == ["export", "train", "data.tokenize", "data.prepare", "tokenizer.train"]


LOAD_WITHOUT_MEGALANG = """
import sys, json
sys.modules["megalang"] = None  # any import of megalang now fails
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
tok = AutoTokenizer.from_pretrained(sys.argv[1])
ids = tok("def main():\\n    return 0\\n", add_special_tokens=False)["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
torch.save({"ids": torch.tensor(ids), "logits": logits}, sys.argv[2])
"""


def assert_export_loads_in_plain_transformers_with_the_same_logits(run: Path, export: Path, out: Path) -> None:
    import torch

    from megalang.data.tokenizer import load_tokenizer
    from megalang.model.load import load_trained_model

    subprocess.run([sys.executable, "-c", LOAD_WITHOUT_MEGALANG, export, out], check=True)
    plain = torch.load(out, weights_only=True)
    ours = load_tokenizer(run / "tokenizer").encode("def main():\n    return 0\n", add_special_tokens=False).ids
    assert plain["ids"].tolist() == ours
    model, _ = load_trained_model(run)
    with torch.no_grad():
        logits = model(plain["ids"][None]).logits[0]
    assert torch.allclose(logits, plain["logits"], atol=1e-5, rtol=0)
