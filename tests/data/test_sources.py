"""data/sources.py: the one glob rule for source paths, and every option that uses it (kinds, mixture, --exclude,
--val-source) agreeing on the same paths."""

from __future__ import annotations

import pytest

from megalang.data.quality import infer_kind
from megalang.data.readers import find_input_files
from megalang.data.sources import matches_any, source_matches
from megalang.data.tokenize import SplitRouter

CASES = [  # (source, glob, matches)
    ("/data/corpus/json/decoder.py", "*/json/*", True),
    ("/data/corpus/json/decoder.py", "json/*", True),
    ("/data/corpus/json/decoder.py", "decoder.py", True),
    ("/data/corpus/json/decoder.py", "/data/*", True),
    ("/data/corpus/json/decoder.py", "*.py", True),
    ("/data/corpus/json/decoder.py", "json", False),
    ("/data/corpus/json/decoder.py", "son/*", False),
    ("/data/corpus/json/decoder.py", "*.PY", False),  # case-sensitive
    ("s3://bucket/crawl/part-0.jsonl", "crawl/*", True),
    ("s3://bucket/crawl/part-0.jsonl", "bucket/crawl/*.jsonl", True),
    ("s3://bucket/crawl/part-0.jsonl", "books/*", False),
]


@pytest.mark.parametrize(("source", "glob", "expected"), CASES)
def test_the_rule(source, glob, expected):
    assert source_matches(source, glob) is expected
    assert matches_any(source, ["nothing/*", glob]) is expected


@pytest.mark.parametrize(("source", "glob", "expected"), CASES)
def test_kinds_and_val_sources_follow_the_rule(source, glob, expected):
    assert (infer_kind(source, {glob: "chat"}, default="web") == "chat") is expected
    assert (SplitRouter([glob], 0.0).split("id", source) == "val") is expected


def test_exclude_follows_the_rule_on_files_and_folders(tmp_path):
    for rel in ("keep/a.txt", "keep/tests/b.txt", "vendor/c.txt", "keep/d.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    found = find_input_files([str(tmp_path)], exclude=["tests/*", "vendor/*", "*.md"]).files
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found) == ["keep/a.txt"]
