"""Bad input through the real CLI (`megalang data prepare / tokenizer train / data tokenize`): exit code 2,
one line naming the offending file or option, and no output folder (nor OUT.tmp) left behind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from megalang.cli import app

runner = CliRunner()


def run_cli(*args) -> tuple[int, list[str]]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def assert_one_line_error(args, out: Path, *words):
    code, lines = run_cli(*args)
    assert code == 2, lines
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


def _missing(tmp):
    return tmp / "no-such-corpus", ["no-such-corpus", "no such file or folder"]


def _empty_corpus(tmp):
    (tmp / "c").mkdir()
    (tmp / "c" / "a.txt").write_text("tiny")
    (tmp / "c" / "b.md").write_text("\n\n")
    return tmp / "c", ["empty corpus", "2 read from 2 files"]


def _binary(tmp):
    (tmp / "c").mkdir()
    (tmp / "c" / "good.txt").write_text("a good document of text\n")
    (tmp / "c" / "blob.txt").write_bytes(b"\x00\x01\x02 not text")
    return tmp / "c", ["blob.txt", "binary file"]


def _invalid_utf8(tmp):
    (tmp / "latin.txt").write_bytes(b"caf\xe9 cr\xe8me")
    return tmp / "latin.txt", ["latin.txt", "invalid UTF-8 at byte offset 3"]


def _malformed_jsonl(tmp):
    (tmp / "d.jsonl").write_text('{"text": "one good line of text"}\n{"text": broken}\n')
    return tmp / "d.jsonl", ["d.jsonl:2", "malformed JSON"]


def _truncated_gzip(tmp):
    data = gzip.compress(b"".join(json.dumps({"text": f"document {i}"}).encode() + b"\n" for i in range(3000)))
    (tmp / "d.jsonl.gz").write_bytes(data[: len(data) // 2])
    return tmp / "d.jsonl.gz", ["d.jsonl.gz", "truncated or corrupt gzip"]


def _parquet_without_text(tmp):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a document"], "n": [1]}), tmp / "d.parquet")
    return tmp / "d.parquet", ["d.parquet", "no column 'text'", "content"]


def _wrong_field_type(tmp):
    (tmp / "d.jsonl").write_text('{"text": "fine text here"}\n{"text": ["not", "a", "string"]}\n')
    return tmp / "d.jsonl", ["d.jsonl:2", "field 'text' is list, expected a string"]


@pytest.mark.parametrize(
    "make", [_missing, _empty_corpus, _binary, _invalid_utf8, _malformed_jsonl, _truncated_gzip,
             _parquet_without_text, _wrong_field_type],
)
def test_data_prepare_bad_input(tmp_path, make):
    source, words = make(tmp_path)
    out = tmp_path / "out"
    assert_one_line_error(["data", "prepare", "--input", source, "--out", out], out, *words)


def test_tokenizer_vocab_larger_than_the_corpus_supports(tmp_path, prepared_dir):
    out = tmp_path / "tok"
    assert_one_line_error(["tokenizer", "train", "--input", prepared_dir, "--out", out, "--vocab-size", 100000],
                          out, "--vocab-size 100000", "at most")


def test_tokenizer_vocab_smaller_than_the_characters_need(tmp_path, prepared_dir):
    out = tmp_path / "tok"
    assert_one_line_error(["tokenizer", "train", "--input", prepared_dir, "--out", out, "--vocab-size", 261],
                          out, "--vocab-size 261 is smaller than this corpus needs")


def test_tokenizer_train_on_a_folder_that_is_not_prepared(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.txt").write_text("raw text, not prepared\n")
    out = tmp_path / "tok"
    assert_one_line_error(["tokenizer", "train", "--input", tmp_path / "raw", "--out", out], out, "raw", "no manifest.json")


def test_data_tokenize_on_a_folder_that_is_not_prepared(tmp_path, tokenizer_dir):
    (tmp_path / "raw").mkdir()
    out = tmp_path / "shards"
    assert_one_line_error(["data", "tokenize", "--input", tmp_path / "raw", "--tokenizer", tokenizer_dir, "--out", out],
                          out, "raw", "no manifest.json")
    assert_one_line_error(["data", "tokenize", "--input", tokenizer_dir, "--tokenizer", tokenizer_dir, "--out", out],
                          out, str(tokenizer_dir), "not prepared documents")


def test_data_tokenize_with_a_wrong_tokenizer_folder(tmp_path, prepared_dir):
    out = tmp_path / "shards"
    assert_one_line_error(["data", "tokenize", "--input", prepared_dir, "--tokenizer", prepared_dir, "--out", out],
                          out, str(prepared_dir), "not a tokenizer")


def test_the_three_stages_succeed_through_the_cli(tmp_path, corpus_dir):
    data, tok, shards = tmp_path / "data", tmp_path / "tok", tmp_path / "shards"
    code, lines = run_cli("data", "prepare", "-i", corpus_dir, "-o", data, "--exclude", "*/json/*")
    assert code == 0 and "documents_out=" in lines[-1]
    code, lines = run_cli("tokenizer", "train", "-i", data, "-o", tok, "--vocab-size", 450, "--max-sentences", 200)
    assert code == 0, lines
    assert json.loads((tok / "manifest.json").read_text())["counts"]["sentences_sampled"] == 200
    code, lines = run_cli("data", "tokenize", "-i", data, "--tokenizer", tok, "-o", shards, "--val-fraction", 0.2)
    assert code == 0 and "val_documents=" in lines[-1]
    assert not any("/json/" in i["path"] for i in json.loads((data / "manifest.json").read_text())["inputs"])
