"""Shared fixtures for monitor tests: random-token shards with a real-sized vocabulary, and debug configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megalang.config import RunConfig
from megalang.data.shards import ShardWriter
from megalang.store.files import sha256_file
from megalang.store.manifest import describe_input, write_manifest


def make_random_shards(root: Path, vocab: int, docs: int = 300, seed: int = 0) -> Path:
    """A stand-in tokenizer artifact and train/val shards of random documents (ids 3..vocab-1, EOS = 2)."""
    tok = root / "tok"
    tok.mkdir(parents=True)
    (tok / "tokenizer.json").write_text('{"stand-in": true}')
    write_manifest(tok, "tokenizer.train", {}, [], {"vocab_size": vocab})
    rng = np.random.default_rng(seed)
    shards = root / "shards"
    shards.mkdir()
    splits = {}
    for split, n in (("train", docs), ("val", docs // 10)):
        writer = ShardWriter(shards, split, np.dtype(np.uint16), tokens_per_shard=1 << 16)
        for _ in range(n):
            writer.add(np.append(rng.integers(3, vocab, rng.integers(40, 200)), 2))
        splits[split] = writer.close()
    write_manifest(
        shards, "data.tokenize", {}, [describe_input(tok)], {"tokens": sum(s["tokens"] for s in splits.values())},
        dtype="uint16", vocab_size=vocab, eos_id=2, bos_id=1, pad_id=0, unk_id=None,
        tokenizer_sha256=sha256_file(tok / "manifest.json"), tokenizer_path=str(tok.resolve()), splits=splits,
    )
    return shards


@pytest.fixture(scope="session")
def shards_2k(tmp_path_factory) -> Path:
    return make_random_shards(tmp_path_factory.mktemp("monitor-data"), vocab=2048)


def run_config(shards: Path, run_dir: Path, **sections) -> RunConfig:
    """Debug preset, 4×32-token micro-batches on the CPU, logging every step; `train={...}` etc. override."""
    data = {
        "model": {"preset": "debug"},
        "data": {"shards": str(shards)},
        "train": {"max_steps": 8, "seq_len": 32, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 2, "log_every": 1, "eval_every": 4, "eval_batches": 2, "progress": False,
                  "device": "cpu"},
        "checkpoint": {"every": 4, "keep": 1},
        "run": {"dir": str(run_dir)},
        "seed": 3,
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return RunConfig.model_validate(data)


@pytest.fixture(scope="session")
def finished_run(shards_2k, tmp_path_factory) -> Path:
    """8 debug steps with TensorBoard on: metrics.jsonl, summary, manifest, report.html, event files."""
    from megalang.train.trainer import train

    run = tmp_path_factory.mktemp("monitor-run") / "run"
    train(run_config(shards_2k, run, metrics={"tensorboard": True}))
    return run
