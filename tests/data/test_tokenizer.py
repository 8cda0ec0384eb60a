"""data/tokenizer.py: SentencePiece BPE training, exact round trips, and id parity between sentencepiece,
tokenizers (tokenizer.json) and transformers (AutoTokenizer)."""

from __future__ import annotations

import json

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from megalang.cli.artifacts import verify
from megalang.config import TokenizerTrainConfig
from megalang.data.tokenizer import (
    load_hf_tokenizer,
    load_tokenizer,
    read_tokenizer_manifest,
    sample_sentences,
    split_sentences,
    train_tokenizer,
)
from megalang.errors import UserError

SAMPLES = [
    "",
    " ",
    "x",
    "def main(argv):\n    if not argv:\n        return 0\n\n\n    for a in argv:\n\t\tprint(a)  # tab-indented\n",
    "class A:\n    '''Doc.'''\n\n    def __init__(self):\n        self.x = {'k': [1, 2.5, None]}\n",
    "    leading spaces, trailing spaces    \n   \n\n",
    "windows\r\nline\r\nendings\r\n",
    "naïve café — Straße, 日本語, русский, Ελληνικά; emoji 🙂🚀👩‍💻 and a rare ꙮ glyph",
    "x = 1;" * 2000,  # one long line
    "\n".join(f"    line_{i} = {i} ** 2  # comment {i}" for i in range(300)),
    "\t\t\t\t\t\t\tdeep\ttabs\t\t",
    "\x00\x01 control \x7f chars \u2028 and \u00a0 nbsp",
]


@pytest.fixture(scope="module")
def sp(tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "spm.model"))


@pytest.fixture(scope="module")
def auto(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def test_artifact_holds_spm_and_hf_files_and_a_manifest(tokenizer_dir, prepared_dir, tokenizer_vocab):
    names = {p.name for p in tokenizer_dir.iterdir()}
    assert names == {"spm.model", "spm.vocab", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "manifest.json"}
    manifest = read_tokenizer_manifest(tokenizer_dir)
    assert manifest["stage"] == "tokenizer.train"
    assert (manifest["vocab_size"], manifest["unk_id"], manifest["bos_id"], manifest["eos_id"], manifest["pad_id"]) == (
        tokenizer_vocab, 0, 1, 2, 3)
    assert manifest["inputs"][0]["path"] == str(prepared_dir.resolve()) and manifest["inputs"][0]["kind"] == "artifact"
    assert manifest["counts"]["sentences_sampled"] > 100 and 0 < manifest["counts"]["sample_tokens_per_byte"] < 1
    assert verify(tokenizer_dir) == []


def test_special_pieces_have_fixed_ids(sp, auto, tokenizer_vocab):
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<pad>"]
    assert sp.get_piece_size() == tokenizer_vocab == len(auto)
    assert (auto.unk_token_id, auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (0, 1, 2, 3)


@pytest.mark.parametrize("text", SAMPLES)
def test_ids_match_across_sentencepiece_tokenizers_and_transformers(tokenizer_dir, sp, auto, text):
    expected = sp.encode(text)
    assert Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json")).encode(text).ids == expected
    assert load_tokenizer(tokenizer_dir).encode(text, add_special_tokens=False).ids == expected
    assert auto(text)["input_ids"] == expected  # no BOS/EOS added by default either
    assert load_hf_tokenizer(tokenizer_dir).encode(text) == expected


@pytest.mark.parametrize("text", SAMPLES)
def test_decode_gives_back_the_exact_text(tokenizer_dir, sp, auto, text):
    ids = sp.encode(text)
    assert sp.decode(ids) == text
    assert load_tokenizer(tokenizer_dir).decode(ids) == text
    assert auto.decode(ids) == text


def test_literal_special_token_text_is_plain_text_everywhere(tokenizer_dir, sp, auto):
    text = 'html = "<s>bold</s>" + "<pad><unk>"'
    expected = sp.encode(text)
    assert 1 not in expected and 2 not in expected
    assert load_tokenizer(tokenizer_dir).encode(text, add_special_tokens=False).ids == expected
    assert auto(text)["input_ids"] == expected
    assert auto.decode(expected) == text


def test_indentation_and_newlines_are_cheap(tokenizer_dir):
    tok = load_tokenizer(tokenizer_dir)
    assert tok.encode("        return x").tokens[0] == "▁" * 8  # indentation is one piece
    assert 0 not in tok.encode("a\nb\r\n\tc").ids  # newlines and tabs never become <unk>


def test_tokenizer_config_names_a_generic_fast_tokenizer(tokenizer_dir):
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["split_special_tokens"] is True
    assert json.loads((tokenizer_dir / "special_tokens_map.json").read_text())["eos_token"] == "</s>"


def test_training_is_deterministic(prepared_dir, tokenizer_dir, tokenizer_vocab, tmp_path):
    again = tmp_path / "again"
    train_tokenizer(TokenizerTrainConfig(input=str(prepared_dir), out=str(again), vocab_size=tokenizer_vocab))
    assert (again / "spm.model").read_bytes() == (tokenizer_dir / "spm.model").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (tokenizer_dir / "tokenizer.json").read_bytes()


def test_vocab_larger_than_the_corpus_supports_names_the_option_and_the_limit(prepared_dir, tmp_path):
    out = tmp_path / "tok"
    with pytest.raises(UserError, match=r"--vocab-size 60000 is larger than this corpus supports \(SentencePiece: at most \d+\)"):
        train_tokenizer(TokenizerTrainConfig(input=str(prepared_dir), out=str(out), vocab_size=60000))
    assert not out.exists() and not (tmp_path / "tok.tmp").exists()


def test_split_sentences_keeps_newlines_and_bounds_size():
    text = "".join(f"line {i}\n" for i in range(20)) + "last"
    chunks = list(split_sentences(text, max_bytes=1000))
    assert "".join(chunks) == text and [c.count("\n") for c in chunks] == [8, 8, 4]
    long = list(split_sentences("é" * 100 + "\nshort\n", max_bytes=40))
    assert all(len(c.encode()) <= 40 for c in long) and "".join(long) == "é" * 100 + "\nshort\n"


def test_sampling_is_bounded_and_deterministic():
    texts = ["\n".join(f"doc {d} line {i}" for i in range(16)) for d in range(50)]  # 2 sentences per doc
    a, stats = sample_sentences(texts, max_sentences=30, max_bytes=1000, seed=7)
    b, _ = sample_sentences(texts, max_sentences=30, max_bytes=1000, seed=7)
    c, _ = sample_sentences(texts, max_sentences=30, max_bytes=1000, seed=8)
    assert a == b and a != c and len(a) == 30 == stats["sentences_sampled"] and stats["sentences_total"] == 100
    assert sample_sentences(texts[:2], max_sentences=30, max_bytes=1000, seed=7)[0] == list(split_sentences(texts[0], 1000)) + list(
        split_sentences(texts[1], 1000))


def test_loading_refuses_folders_that_are_not_tokenizers(tmp_path, prepared_dir):
    with pytest.raises(UserError, match="is a 'data.prepare' artifact, not a tokenizer"):
        load_tokenizer(prepared_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(UserError, match="no manifest.json"):
        read_tokenizer_manifest(tmp_path / "empty")


def test_a_copy_without_manifest_still_loads(tokenizer_dir, tmp_path):
    import shutil

    copy = tmp_path / "run" / "tokenizer"
    shutil.copytree(tokenizer_dir, copy, ignore=shutil.ignore_patterns("manifest.json"))
    assert load_tokenizer(copy).encode("x = 1").ids == load_tokenizer(tokenizer_dir).encode("x = 1").ids
