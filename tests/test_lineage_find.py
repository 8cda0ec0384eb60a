"""`megalang lineage --find`: a planted document is found in every artifact made from it (prepared set, tokenizer,
shards, run, export), from manifests and document indexes alone; a filtered-out document is found nowhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tiny_pipeline import STDLIB, cli, train_args

PLANTED = ("Maria Example asked on 3 May for her incident report on the breached VPN gateway to be removed from "
           "every corpus; this paragraph stands in for her document. The report described how the gateway was left "
           "with an old password after the move to the new office, and how the team found the problem a week later "
           "when the logs showed logins from a country where nobody in the company works. It is long enough to be "
           "kept by the quality rules of its kind.\n")
SHORT = "tiny note"  # under min_chars: dropped by prepare


def ok(*args) -> list[str]:
    code, lines, crash = cli(*args)
    assert code == 0 and crash is None, (args, lines, crash)
    return lines


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("erasure")
    corpus, other = root / "corpus", root / "other-corpus"
    for d, names in ((corpus, ("textwrap.py", "heapq.py", "shlex.py")), (other, ("bisect.py", "fnmatch.py"))):
        d.mkdir()
        for name in names:
            shutil.copyfile(STDLIB / name, d / name)
    (corpus / "planted.txt").write_text(PLANTED)
    (corpus / "short.txt").write_text(SHORT)
    art = root / "artifacts"
    ok("data", "prepare", "-i", corpus, "-o", art / "data")
    ok("data", "prepare", "-i", other, "-o", art / "other-data")
    ok("tokenizer", "train", "-i", art / "data", "-o", art / "tok", "--vocab-size", 400)
    ok("data", "tokenize", "-i", art / "data", "--tokenizer", art / "tok", "-o", art / "shards", "--val-fraction", 0.2)
    ok("data", "tokenize", "-i", art / "other-data", "--tokenizer", art / "tok", "-o", art / "other-shards",
       "--val-fraction", 0.2)
    ok(*train_args(art / "shards", root / "runs" / "run"))
    ok("export", "--run", root / "runs" / "run", "--out", root / "releases" / "hf")
    return root


def planted_id(data: Path) -> str:
    ids = [r["id"] for f in sorted(data.glob("docs-*.parquet")) for r in pq.read_table(f).to_pylist()
           if r["source"].endswith("planted.txt")]
    assert len(ids) == 1
    return ids[0]


def found(root: Path, query: str, *dirs: Path) -> dict:
    lines = ok("lineage", "--find", query, *(dirs or (root,)), "--json")
    return json.loads("\n".join(lines))


def test_planted_document_found_downstream_without_reading_documents(tree, monkeypatch):
    doc = planted_id(tree / "artifacts" / "data")
    monkeypatch.setattr(pq, "ParquetFile", lambda *a, **k: pytest.fail("lineage --find read a document file"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("lineage --find read a document file"))
    result = found(tree, doc)
    hits = {Path(h["path"]).relative_to(tree).as_posix(): h["stage"] for h in result["hits"]}
    assert hits == {"artifacts/data": "data.prepare", "artifacts/tok": "tokenizer.train",
                    "artifacts/shards": "data.tokenize",
                    "artifacts/other-shards": "data.tokenize",  # tokenized with the tokenizer trained on it
                    "runs/run": "train", "runs/run/tokenizer": "tokenizer.train",  # the run's copy of its tokenizer
                    "releases/hf": "export"}
    # the chain runs through the manifests under the named folders only: the releases alone do not show it
    assert found(tree, doc, tree / "releases")["hits"] == []


def test_raw_file_by_path_and_by_content(tree):
    by_file = found(tree, str(tree / "corpus" / "planted.txt"))
    by_path = found(tree, "corpus/planted.txt")
    assert [h["path"] for h in by_file["hits"]] == [h["path"] for h in by_path["hits"]]
    assert {h["stage"] for h in by_file["hits"]} >= {"data.prepare", "data.tokenize", "train", "export"}
    assert "1 documents kept" in by_file["hits"][0]["why"]


def test_filtered_document_found_nowhere(tree):
    from megalang.data.documents import doc_id

    result = found(tree, doc_id(SHORT))
    assert result["hits"] == []
    lines = ok("lineage", "--find", doc_id(SHORT), tree)
    assert lines == [f"not found: no artifact under {tree} holds {doc_id(SHORT)}"]
    by_file = found(tree, str(tree / "corpus" / "short.txt"))
    assert by_file["hits"] == []
    assert [Path(d["path"]).name for d in by_file["dropped"]] == ["data"]


def test_unfinished_run_found_through_its_resolved_config(tree, tmp_path):
    run = tree / "runs" / "killed"
    shutil.copytree(tree / "runs" / "run", run)
    (run / "manifest.json").unlink()
    try:
        hits = {Path(h["path"]).name: h["stage"] for h in found(tree, planted_id(tree / "artifacts" / "data"))["hits"]}
        assert hits["killed"] == "train (unfinished)"
    finally:
        shutil.rmtree(run)


def test_index_is_in_the_manifest_and_verifies(tree):
    manifest = json.loads((tree / "artifacts" / "data" / "manifest.json").read_text())
    assert {"doc-index.bin", "doc-sources.json"} <= set(manifest["files"])
    assert manifest["files"]["doc-index.bin"]["size"] == 12 * manifest["counts"]["documents_out"]
    ok("verify", tree / "artifacts" / "data")


@pytest.mark.parametrize("args, words", [
    (("--find", "x", "/nonexistent/megalang-dir"), "/nonexistent/megalang-dir: no such folder"),
    (("--find", "  ", "."), "--find: empty"),
    (("a", "b"), "one artifact folder, got 2"),
])
def test_bad_input(args, words):
    code, lines, crash = cli("lineage", *args)
    assert code == 2 and crash is None
    assert len(lines) == 1 and words in lines[0], lines
