"""data/readers.py, issue #5 formats: .zst/.bz2, JSON arrays and nested fields, HF `save_to_disk` folders,
fsspec URLs (memory://), and the bad-input cases that come with them."""

from __future__ import annotations

import bz2
import json

import fsspec
import pyarrow as pa
import pytest

from megalang.config import PrepareConfig
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare
from megalang.data.readers import find_input_files, read_documents
from megalang.errors import UserError

RECORDS = [{"text": "first document here"}, {"text": "second document here"}]
MINIMAL_STEPS = ["normalize", "length", "exact_dedup"]  # the readers' tiny documents would fail the quality rules


def jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def docs(path, **kw):
    return [text for text, _ in read_documents(path, **kw)]


def test_zstd_and_bzip2_jsonl_and_text(tmp_path):
    import zstandard

    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(RECORDS)))
    (tmp_path / "b.jsonl.bz2").write_bytes(bz2.compress(jsonl_bytes(RECORDS)))
    (tmp_path / "c.txt.zst").write_bytes(zstandard.ZstdCompressor().compress("a whole compressed book".encode()))
    for name in ("a.jsonl.zst", "b.jsonl.bz2"):
        assert docs(tmp_path / name) == ["first document here", "second document here"]
    assert docs(tmp_path / "c.txt.zst") == ["a whole compressed book"]
    (tmp_path / "bad.jsonl.zst").write_bytes(b"not zstd at all")
    (tmp_path / "bad.jsonl.bz2").write_bytes(bz2.compress(jsonl_bytes(RECORDS * 50))[:40])
    for name, codec in (("bad.jsonl.zst", "zstd"), ("bad.jsonl.bz2", "bzip2")):
        with pytest.raises(UserError, match=f"{name}: truncated or corrupt {codec}"):
            docs(tmp_path / name)


def test_json_arrays_and_nested_text_fields(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"meta": {"body": "nested text one"}}, {"meta": {"body": "two"}}]))
    assert docs(tmp_path / "a.json", text_field="meta.body") == ["nested text one", "two"]
    (tmp_path / "lines.json").write_bytes(jsonl_bytes(RECORDS))
    assert len(docs(tmp_path / "lines.json")) == 2
    (tmp_path / "bad.json").write_text(json.dumps([{"meta": {"body": 3}}]))
    with pytest.raises(UserError, match=r"bad.json: item 1: field 'meta.body' is int, expected a string"):
        docs(tmp_path / "bad.json", text_field="meta.body")


def save_to_disk(root, texts, shards=2):
    """The layout `datasets.Dataset.save_to_disk` writes: Arrow IPC streams plus state/info JSON."""
    root.mkdir(parents=True)
    per = -(-len(texts) // shards)
    files = []
    for i in range(shards):
        table = pa.table({"text": texts[i * per : (i + 1) * per], "label": list(range(len(texts[i * per : (i + 1) * per])))})
        name = f"data-{i:05d}-of-{shards:05d}.arrow"
        with pa.OSFile(str(root / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
        files.append({"filename": name})
    (root / "state.json").write_text(json.dumps({"_data_files": files, "_split": None}))
    (root / "dataset_info.json").write_text(json.dumps({"features": {"text": {"dtype": "string"}}}))


def test_hf_save_to_disk_folders_read_only_their_data(tmp_path):
    texts = [f"dataset row number {i}" for i in range(7)]
    save_to_disk(tmp_path / "ds", texts)
    found = find_input_files([str(tmp_path / "ds")])
    assert [p.name for p in found.files] == ["data-00000-of-00002.arrow", "data-00001-of-00002.arrow"]
    assert [t for p in found.files for t in docs(p)] == texts
    with pytest.raises(UserError, match="no column 'body'"):
        docs(found.files[0], text_field="body")


def test_fsspec_urls_are_read_streaming_and_recorded_by_url(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/corpus/a.jsonl", jsonl_bytes(RECORDS))
    fs.pipe("/corpus/sub/b.txt", b"a remote text document")
    try:
        manifest = prepare(PrepareConfig(inputs=["memory://corpus"], out=str(tmp_path / "out"), workers=1,
                                         steps=MINIMAL_STEPS))
        assert [r["text"] for r in iter_prepared(tmp_path / "out")] == [r["text"] for r in RECORDS] + ["a remote text document"]
        assert [i["path"] for i in manifest["inputs"]] == ["memory:///corpus/a.jsonl", "memory:///corpus/sub/b.txt"]
        assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])
        assert len(find_input_files(["memory://corpus/*.jsonl"]).files) == 1
    finally:
        fs.rm("/corpus", recursive=True)


@pytest.mark.parametrize("url", ["memory://missing/x.jsonl", "http://127.0.0.1:9/x.jsonl"])
def test_unreachable_urls_are_one_line_naming_the_url(url):
    with pytest.raises(UserError) as info:
        find_input_files([url])
    assert url in str(info.value) and "\n" not in str(info.value)


def test_skip_mode_counts_bad_records_in_the_manifest(tmp_path):
    (tmp_path / "in").mkdir()
    lines = [{"text": "a good first line"}, {"body": "no text"}, {"text": 7}, {"text": "a good last line"}]
    (tmp_path / "in" / "a.jsonl").write_bytes(jsonl_bytes(lines) + b'{"text": "caf\xe9 latin-1"}\n')
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(b"\x1f\x8b\x08 truncated")
    manifest = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), errors="skip", workers=1,
                                     steps=MINIMAL_STEPS))
    assert manifest["counts"]["documents_out"] == 2 and manifest["counts"]["errors_skipped"] == 4
    where = [e.split(": ")[0].rsplit("/", 1)[-1] for e in manifest["errors"]]
    assert where == ["a.jsonl:2", "a.jsonl:3", "a.jsonl:5", "b.jsonl.gz"]
    assert "truncated or corrupt gzip" in manifest["errors"][3] and "invalid UTF-8" in manifest["errors"][2]


def test_a_single_line_larger_than_max_doc_bytes_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:  # 200 MB with no newline; the reader must stop after max_doc_bytes + 1
        f.write(b'{"text": "')
        chunk = b"x" * (1 << 20)
        for _ in range(200):
            f.write(chunk)
    with pytest.raises(UserError, match=r"huge.jsonl:1: document of >1048576 bytes exceeds max_doc_bytes"):
        docs(path, max_doc_bytes=1 << 20)
