"""data/shards.py: the packed shard format, written by ShardWriter and read back with open_split or plain numpy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from megalang.data.shards import ShardWriter, open_split, read_shard_manifest, shard_bounds, token_dtype
from megalang.errors import UserError
from megalang.store.files import staging_dir
from megalang.store.manifest import write_manifest

DOCS = [np.arange(start, start + n) for start, n in [(0, 5), (100, 3), (200, 7), (300, 1), (400, 4)]]


def write_split(root, docs, tokens_per_shard, split="train", dtype=np.uint16) -> dict:
    writer = ShardWriter(root, split, np.dtype(dtype), tokens_per_shard)
    for d in docs:
        writer.add(d)
    return writer.close()


def write_artifact(root, docs, tokens_per_shard=8, dtype=np.uint16, vocab_size=1000):
    """A minimal data.tokenize artifact, the way `megalang data tokenize` lays it out."""
    with staging_dir(root) as tmp:
        splits = {"train": write_split(tmp, docs, tokens_per_shard, "train", dtype),
                  "val": write_split(tmp, docs[:1], tokens_per_shard, "val", dtype)}
        write_manifest(tmp, "data.tokenize", {}, [], {}, dtype=np.dtype(dtype).name, vocab_size=vocab_size, splits=splits)
    return root


def test_token_dtype_switches_to_uint32_above_65536():
    assert token_dtype(8192) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(1 << 20) == np.uint32


def test_writer_rolls_over_after_tokens_per_shard_keeping_documents_whole(tmp_path):
    summary = write_split(tmp_path, DOCS, tokens_per_shard=8)
    # shard 0: docs of 5+3 tokens (8 >= 8 closes it); shard 1: 7+1; shard 2: 4
    assert summary == {"files": ["train-00000.bin", "train-00000.idx", "train-00001.bin", "train-00001.idx",
                                 "train-00002.bin", "train-00002.idx"], "tokens": 20, "documents": 5}
    assert [(tmp_path / f).stat().st_size for f in summary["files"]] == [16, 16, 16, 16, 8, 8]


def test_shards_read_back_with_plain_numpy(tmp_path):
    summary = write_split(tmp_path, DOCS, tokens_per_shard=8)
    docs = []
    for name in summary["files"][::2]:
        tokens = np.memmap(tmp_path / name, dtype=np.uint16, mode="r")
        ends = np.fromfile(tmp_path / name.replace(".bin", ".idx"), dtype=np.uint64)
        docs += np.split(np.asarray(tokens), ends[:-1].astype(np.int64))
    assert [d.tolist() for d in docs] == [d.tolist() for d in DOCS]


def test_open_split_is_one_sequence_across_shards(tmp_path):
    root = write_artifact(tmp_path / "shards", DOCS)
    split = open_split(root, "train")
    flat = np.concatenate(DOCS)
    assert len(split) == 20 and split.num_documents == 5
    assert split.window(0, 20).tolist() == flat.tolist()
    assert split.window(6, 9).tolist() == flat[6:15].tolist()  # crosses two shard boundaries
    assert split.window(6, 9).dtype == np.int64
    assert [d.tolist() for d in split.documents()] == [d.tolist() for d in DOCS]
    with pytest.raises(IndexError):
        split.window(15, 6)


def test_uint32_shards_keep_large_ids(tmp_path):
    docs = [np.array([70000, 1, 2**32 - 1])]
    root = write_artifact(tmp_path / "shards", docs, dtype=np.uint32, vocab_size=1 << 20)
    assert open_split(root, "train").window(0, 3).tolist() == [70000, 1, 2**32 - 1]


def test_ids_outside_the_dtype_are_refused(tmp_path):
    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint16), 1024)
    with pytest.raises(ValueError, match="outside uint16"):
        writer.add(np.array([1, 70000]))


def test_a_missing_split_or_damaged_shard_is_a_user_error(tmp_path):
    root = write_artifact(tmp_path / "shards", DOCS)
    manifest = read_shard_manifest(root)
    manifest["splits"]["val"] = {"files": [], "tokens": 0, "documents": 0}
    with pytest.raises(UserError, match="no 'val' split"):
        open_split(root, "val", manifest)
    (root / "train-00001.bin").write_bytes(b"\0" * 5)
    with pytest.raises(UserError, match="train-00001.bin: size 5 is not a multiple"):
        open_split(root, "train")
    (root / "train-00001.bin").write_bytes(b"\0" * 6)
    with pytest.raises(UserError, match="train-00001.bin: 3 tokens but its .idx ends at 8"):
        open_split(root, "train")
    (root / "train-00001.bin").write_bytes(b"\0" * 16)
    open_split(root, "train")
    (root / "train-00002.idx").unlink()
    with pytest.raises(UserError, match="train-00002.bin: shard file missing"):
        open_split(root, "train")


def test_read_shard_manifest_refuses_other_artifacts(tmp_path):
    with staging_dir(tmp_path / "prep") as tmp:
        write_manifest(tmp, "data.prepare", {}, [], {})
    with pytest.raises(UserError, match="is a 'data.prepare' artifact, not token shards"):
        read_shard_manifest(tmp_path / "prep")


@pytest.mark.parametrize("tokens_per_shard", [1, 4, 7, 8, 100])
def test_shard_bounds_is_the_writers_cut(tmp_path, tokens_per_shard):
    """The parallel tokenize path cuts shards with shard_bounds; it must cut where ShardWriter does."""
    lengths = np.array([len(d) for d in DOCS])
    info = write_split(tmp_path, DOCS, tokens_per_shard)
    written = [len(np.fromfile(tmp_path / name, dtype=np.uint64)) for name in info["files"] if name.endswith(".idx")]
    bounds = shard_bounds(lengths, tokens_per_shard)
    assert [b - a for a, b in bounds] == written
    assert bounds[0][0] == 0 and bounds[-1][1] == len(DOCS) and all(x[1] == y[0] for x, y in itertools.pairwise(bounds))
    assert shard_bounds(np.zeros(0, np.int64), tokens_per_shard) == []
