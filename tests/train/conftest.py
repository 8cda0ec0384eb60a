"""Shared fixtures for trainer tests: tiny synthetic token shards (a learnable counting sequence) and configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megalang.config import RunConfig
from megalang.data.shards import ShardWriter
from megalang.store.files import sha256_file
from megalang.store.manifest import describe_input, write_manifest

VOCAB, EOS, BOS, PAD = 64, 2, 1, 0


def make_tokenizer(root: Path, tag: str = "a") -> Path:
    """A stand-in tokenizer artifact: the trainer only copies it and hashes its manifest."""
    root.mkdir(parents=True)
    (root / "tokenizer.json").write_text('{"tag": "%s"}' % tag)
    write_manifest(root, "tokenizer.train", {"tag": tag}, [], {"vocab_size": VOCAB})
    return root


def make_shards(root: Path, tokenizer: Path, train_docs: int = 400, val_docs: int = 40, seed: int = 0,
                vocab: int = VOCAB) -> Path:
    """Documents count upward from a random start (mod 60, ids 3..62), each followed by EOS: the next token
    is predictable inside a document, so a model that learns shows a falling loss within a few steps.
    `vocab` (>= 63) sets the manifest's vocab size, e.g. an odd one that no world size divides."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    splits = {}
    for split, n in (("train", train_docs), ("val", val_docs)):
        writer = ShardWriter(root, split, np.dtype(np.uint16), tokens_per_shard=4096)
        for _ in range(n):
            start, length = rng.integers(0, 60), rng.integers(20, 80)
            writer.add(np.append((start + np.arange(length)) % 60 + 3, EOS))
        splits[split] = writer.close()
    write_manifest(
        root, "data.tokenize", {}, [describe_input(tokenizer)],
        {"tokens": sum(s["tokens"] for s in splits.values())},
        dtype="uint16", vocab_size=vocab, eos_id=EOS, bos_id=BOS, pad_id=PAD, unk_id=None,
        tokenizer_sha256=sha256_file(tokenizer / "manifest.json"), tokenizer_path=str(tokenizer.resolve()),
        splits=splits,
    )
    return root


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    return make_shards(root / "shards", make_tokenizer(root / "tok"))


def debug_config(shards: Path, run_dir: Path, **sections) -> RunConfig:
    """The debug preset on 4×32-token micro-batches, logging every step; `train={...}` etc. override."""
    data = {
        "model": {"preset": "debug"},
        "data": {"shards": str(shards)},
        "train": {"max_steps": 12, "seq_len": 32, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 2, "log_every": 1, "eval_batches": 2, "progress": False, "device": "cpu"},
        "checkpoint": {"every": 4, "keep": 2},
        "run": {"dir": str(run_dir)},
        "seed": 7,
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    return RunConfig.model_validate(data)


def train_capturing_weights(cfg: RunConfig, env: dict[str, str] | None = None):
    """train(cfg), also returning clones of the model's final in-memory weights (None if it exited)."""
    from megalang.train import trainer

    captured = {}
    original = trainer.finish

    def finish(t, wall):
        captured.update({k: v.detach().clone() for k, v in t.model.state_dict().items()})
        return original(t, wall)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "finish", finish)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return trainer.train(cfg), captured


@pytest.fixture(scope="session")
def full_run(shards, tmp_path_factory):
    """12 debug steps in one call: checkpoints every 4 (keep 2), val loss every 4."""
    run = tmp_path_factory.mktemp("full") / "run"
    summary, weights = train_capturing_weights(debug_config(shards, run, train={"eval_every": 4}))
    return run, summary, weights


@pytest.fixture(scope="session")
def resumed_run(shards, tmp_path_factory):
    """The same command killed after step 6 (newest checkpoint: step 4), decoys planted, then re-run."""
    run = tmp_path_factory.mktemp("resumed") / "run"
    cfg = debug_config(shards, run, train={"eval_every": 4})
    with pytest.raises(SystemExit, match="step 6"):
        train_capturing_weights(cfg, env={"MEGALANG_FAULT_AT_STEP": "6"})
    interrupted = read_lines(run / "metrics.jsonl")
    root = run / "checkpoints"
    (root / "step-8.tmp").mkdir()  # a save killed mid-way: never discovered
    (root / "step-8.tmp" / "__0_0.distcp").write_bytes(b"junk")
    (root / "step-5").mkdir()  # no COMPLETE.json: never discovered
    (root / "step-5" / ".metadata").write_bytes(b"junk")
    summary, weights = train_capturing_weights(cfg)
    return run, summary, weights, interrupted


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()
