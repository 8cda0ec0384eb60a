"""data/tokenize.py: documents → train/val shards, EOS after each document, split routing, the manifest contract."""

from __future__ import annotations

import numpy as np
import pytest

from megalang.cli.artifacts import verify
from megalang.config import PrepareConfig, TokenizeConfig
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare
from megalang.data.shards import open_split, read_shard_manifest
from megalang.data.sources import source_matches
from megalang.data.tokenize import SplitRouter, tokenize
from megalang.data.tokenizer import load_tokenizer
from megalang.errors import UserError
from megalang.store.files import sha256_file


def test_manifest_has_the_fields_training_reads(shards_dir, tokenizer_dir, prepared_dir, tokenizer_vocab):
    m = read_shard_manifest(shards_dir)
    assert m["stage"] == "data.tokenize"
    assert (m["dtype"], m["vocab_size"], m["unk_id"], m["bos_id"], m["eos_id"], m["pad_id"]) == (
        "uint16", tokenizer_vocab, 0, 1, 2, 3)
    assert m["tokenizer_sha256"] == sha256_file(tokenizer_dir / "manifest.json")
    assert m["tokenizer_path"] == str(tokenizer_dir.resolve())
    assert [i["stage"] for i in m["inputs"]] == ["data.prepare", "tokenizer.train"]
    assert set(m["splits"]) == {"train", "val"}
    for name, split in m["splits"].items():
        assert set(split) == {"files", "tokens", "documents"}
        assert split["tokens"] == m["counts"][f"{name}_tokens"] and split["documents"] == m["counts"][f"{name}_documents"]
    assert set(m["counts"]) == {"documents", "tokens", "train_tokens", "val_tokens", "train_documents", "val_documents"}
    assert m["counts"]["documents"] == len(list(iter_prepared(prepared_dir)))
    assert len(m["splits"]["train"]["files"]) > 2  # tokens_per_shard=4096 rolled over
    assert verify(shards_dir) == []


def test_every_document_is_its_tokens_then_eos(shards_dir, tokenizer_dir, prepared_dir):
    tok = load_tokenizer(tokenizer_dir)
    texts = {"train": [], "val": []}
    for row in iter_prepared(prepared_dir):
        texts["val" if "/json/" in row["source"] else "train"].append(row["text"])
    for name in ("train", "val"):
        docs = list(open_split(shards_dir, name).documents())
        assert len(docs) == len(texts[name]) > 0
        for doc, text in zip(docs, texts[name]):
            assert doc[-1] == 2 and 2 not in doc[:-1].tolist()
            assert doc[:-1].tolist() == tok.encode(text, add_special_tokens=False).ids
            assert tok.decode(doc[:-1].tolist()) == text


def test_val_sources_match_the_whole_path_or_any_tail():
    src = "/data/corpus/json/decoder.py"
    assert source_matches(src, "*/json/*") and source_matches(src, "json/*") and source_matches(src, "decoder.py")
    assert source_matches(src, "corpus/*/decoder.py") and source_matches(src, "/data/*")
    assert not source_matches(src, "json") and not source_matches(src, "*/csv.py") and not source_matches(src, "son/*")


def test_hash_routing_is_deterministic_and_close_to_the_fraction():
    router = SplitRouter([], 0.1)
    ids = [f"{i:016x}" for i in range(20000)]
    chosen = [router.split(i, "/x.py") for i in ids]
    assert chosen == [SplitRouter([], 0.1).split(i, "/other.py") for i in ids]
    assert 0.09 < chosen.count("val") / len(ids) < 0.11
    assert all(SplitRouter([], 0.0).split(i, "/x.py") == "train" for i in ids[:500])
    assert SplitRouter(["x.py"], 0.0).split(ids[0], "/a/x.py") == "val"


def small_corpus(tmp_path, n_docs: int):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n_docs):
        (folder / f"m{i}.py").write_text(f"def function_{i}(x):\n    return x * {i}\n")
    prepare(PrepareConfig(inputs=[str(folder)], out=str(tmp_path / "data")))
    return tmp_path / "data"


def test_val_is_never_empty_when_asked_for(tmp_path, tokenizer_dir):
    data = small_corpus(tmp_path, 3)
    manifest = tokenize(TokenizeConfig(input=str(data), tokenizer=str(tokenizer_dir), out=str(tmp_path / "s"),
                                       val_fraction=0.001))
    assert (manifest["counts"]["train_documents"], manifest["counts"]["val_documents"]) == (2, 1)
    last = list(iter_prepared(data))[-1]["text"]
    [val_doc] = list(open_split(tmp_path / "s", "val").documents())
    assert load_tokenizer(tokenizer_dir).decode(val_doc[:-1].tolist()) == last


def test_no_val_split_when_not_asked_for(tmp_path, tokenizer_dir):
    data = small_corpus(tmp_path, 3)
    manifest = tokenize(TokenizeConfig(input=str(data), tokenizer=str(tokenizer_dir), out=str(tmp_path / "s"),
                                       val_fraction=0))
    assert manifest["splits"]["val"] == {"files": [], "tokens": 0, "documents": 0}
    assert manifest["counts"]["train_documents"] == 3
    with pytest.raises(UserError, match="no 'val' split"):
        open_split(tmp_path / "s", "val")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(val_fraction=0, val_sources=["*/nothing/*"]), "--val-source \\*/nothing/\\*: matched no document"),
        (dict(val_fraction=0, val_sources=["*.py"]), "every document went to val"),
    ],
)
def test_bad_splits_are_user_errors_and_leave_no_output(tmp_path, tokenizer_dir, kwargs, message):
    data = small_corpus(tmp_path, 3)
    with pytest.raises(UserError, match=message):
        tokenize(TokenizeConfig(input=str(data), tokenizer=str(tokenizer_dir), out=str(tmp_path / "s"), **kwargs))
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.tmp").exists()


def test_inputs_must_be_the_right_artifacts(tmp_path, prepared_dir, tokenizer_dir):
    with pytest.raises(UserError, match="is a 'tokenizer.train' artifact, not prepared documents"):
        tokenize(TokenizeConfig(input=str(tokenizer_dir), tokenizer=str(tokenizer_dir), out=str(tmp_path / "s")))
    with pytest.raises(UserError, match="is a 'data.prepare' artifact, not a tokenizer"):
        tokenize(TokenizeConfig(input=str(prepared_dir), tokenizer=str(prepared_dir), out=str(tmp_path / "s")))
    assert not (tmp_path / "s").exists()


def test_shard_tokens_are_the_declared_dtype(shards_dir):
    m = read_shard_manifest(shards_dir)
    first = shards_dir / m["splits"]["train"]["files"][0]
    tokens = np.fromfile(first, dtype=np.uint16)
    assert tokens.max() < m["vocab_size"] and (tokens == m["eos_id"]).sum() == len(np.fromfile(first.with_suffix(".idx"), np.uint64))
