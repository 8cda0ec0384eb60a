"""Shard integrity at train start (docs/reliability.md, promise 5): data/integrity.py and its hook in the trainer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from train.conftest import make_shards, make_tokenizer
from typer.testing import CliRunner

from megalang.cli import app
from megalang.data import integrity
from megalang.data.shards import read_shard_manifest
from megalang.errors import UserError
from megalang.store import files as artifacts
from megalang.store.files import sha256_file


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("integrity")
    return make_shards(root / "shards", make_tokenizer(root / "tok"), train_docs=200, val_docs=20)


@pytest.fixture
def shards(pristine, tmp_path, monkeypatch) -> Path:
    """A private copy (tests damage it) and a private hash cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return Path(shutil.copytree(pristine, tmp_path / "shards"))


@pytest.fixture
def hash_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []

    def counting(path):
        calls.append(Path(path))
        return sha256_file(path)

    monkeypatch.setattr(artifacts, "sha256_file", counting)  # under sha256_files's thread pool
    return calls


def flip_byte(path: Path, keep_mtime: bool = False) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def train_cli(shards: Path, run: Path):
    args = ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={run}", "train.max_steps=2",
            "train.seq_len=32", "train.micro_batch_size=4", "train.progress=false", "train.device=cpu"]
    return CliRunner().invoke(app, args)


def test_flipped_byte_stops_training_with_exit_2_naming_the_file(shards, tmp_path):
    flip_byte(shards / "train-00000.bin")
    result = train_cli(shards, tmp_path / "run")
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "train-00000.bin: SHA-256" in message and "does not match" in message
    assert "re-run `megalang data tokenize`" in message
    assert not (tmp_path / "run").exists()  # refused before the run folder is touched


def test_truncated_shard_is_caught_before_hashing(shards, hash_calls):
    path = shards / "val-00000.bin"
    path.write_bytes(path.read_bytes()[:-2])  # still whole uint16 tokens: only the manifest size tells
    with pytest.raises(UserError, match=r"val-00000.bin: \d+ bytes but .*manifest.json says \d+ \(truncated"):
        integrity.verify_shards(shards, read_shard_manifest(shards))
    assert path not in hash_calls


def test_cache_hit_skips_hashing_and_always_rehashes(shards, hash_calls):
    manifest = read_shard_manifest(shards)
    files = len(manifest["files"])
    assert integrity.verify_shards(shards, manifest) == files == len(hash_calls)
    assert integrity.verify_shards(shards, manifest) == 0 and len(hash_calls) == files  # all from the cache
    assert integrity.verify_shards(shards, manifest, "always") == files and len(hash_calls) == 2 * files
    os.utime(shards / "train-00000.idx")  # a new mtime: that file alone is hashed again
    assert integrity.verify_shards(shards, manifest) == 1 and hash_calls[-1].name == "train-00000.idx"


def test_auto_trusts_size_and_mtime_always_catches_a_silent_flip(shards, hash_calls):
    manifest = read_shard_manifest(shards)
    integrity.verify_shards(shards, manifest)
    flip_byte(shards / "train-00000.bin", keep_mtime=True)  # bit rot: same size, same mtime
    integrity.verify_shards(shards, manifest)  # the documented trade-off of `auto`
    with pytest.raises(UserError, match="train-00000.bin: SHA-256"):
        integrity.verify_shards(shards, manifest, "always")
    assert integrity.verify_shards(shards, manifest, "never") == 0


def test_ranks_split_the_files(shards, hash_calls):
    manifest = read_shard_manifest(shards)
    integrity.verify_shards(shards, manifest, "always", rank=0, world=2)
    integrity.verify_shards(shards, manifest, "always", rank=1, world=2)
    assert sorted(hash_calls) == sorted(shards / name for name in manifest["files"])
    assert len(set(hash_calls)) == len(hash_calls)  # each file once


def test_damaged_cache_is_ignored(shards, hash_calls):
    integrity.cache_path().parent.mkdir(parents=True)
    integrity.cache_path().write_text("{not json")
    manifest = read_shard_manifest(shards)
    assert integrity.verify_shards(shards, manifest) == len(manifest["files"])
    assert integrity.verify_shards(shards, manifest) == 0
