"""data/readers.py: finding input files and reading text / JSONL(.gz) / Parquet, with one-line errors."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from megalang.data.readers import find_input_files, iter_input_files, read_documents
from megalang.errors import UserError


def docs(path, **kw):
    return [text for text, _ in read_documents(path, **kw)]


def make_tree(root: Path) -> Path:
    for rel, content in {
        "b/z.py": "print('z')\n",
        "b/a.md": "# a\n",
        "a.txt": "top\n",
        "b/c/deep.rst": "deep\n",
        "b/image.png": "\x89PNG",
        "README": "no extension\n",
        "skip/me.txt": "excluded\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    return root


# --- finding files ----------------------------------------------------------------------------------


def test_folders_are_walked_recursively_in_sorted_order_and_unknown_types_are_skipped(tmp_path):
    root = make_tree(tmp_path / "tree")
    found = find_input_files([str(root)], exclude=["*/skip/*"])
    assert [p.relative_to(root.resolve()).as_posix() for p in found.files] == ["a.txt", "b/a.md", "b/c/deep.rst", "b/z.py"]
    assert sorted(p.name for p in found.skipped) == ["README", "image.png"]
    assert iter_input_files([str(root)], exclude=["*/skip/*"]) == found.files


def test_globs_expand_and_files_are_listed_once(tmp_path):
    root = make_tree(tmp_path / "tree")
    found = find_input_files([f"{root}/**/*.py", str(root / "b" / "z.py"), f"{root}/b/*"])
    assert [p.name for p in found.files] == ["z.py", "a.md", "deep.rst"]
    assert [p.name for p in found.skipped] == ["image.png"]


def test_the_output_folder_is_never_read(tmp_path):
    root = make_tree(tmp_path / "tree")
    (root / "out").mkdir()
    (root / "out" / "old.txt").write_text("an earlier output\n")
    found = find_input_files([str(root)], out=str(root / "out"))
    assert "old.txt" not in [p.name for p in found.files]


@pytest.mark.parametrize(
    "item, expect",
    [("missing.txt", "missing.txt: no such file or folder"), ("nothing-*.jsonl", "nothing-*.jsonl: glob matches no files")],
)
def test_missing_inputs_are_named(tmp_path, monkeypatch, item, expect):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=re.escape(expect)):
        find_input_files([item])


def test_an_explicit_file_of_unknown_type_is_an_error(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"xx")
    with pytest.raises(UserError, match=r"data\.bin: unsupported file type"):
        find_input_files([str(tmp_path / "data.bin")])


# --- reading ----------------------------------------------------------------------------------------


def test_a_text_file_is_one_document_with_its_absolute_path_as_source(tmp_path):
    path = tmp_path / "mod.py"
    path.write_bytes("\ufeffdef f():\n\treturn 'é'\n".encode())
    [(text, source)] = list(read_documents(path))
    assert text == "def f():\n\treturn 'é'\n"  # byte-order mark dropped, everything else kept
    assert source == str(path.resolve())


@pytest.mark.parametrize("name, gz", [("a.jsonl", False), ("a.jsonl.gz", True), ("a.json.gz", True)])
def test_jsonl_is_one_document_per_line(tmp_path, write_jsonl, name, gz):
    path = write_jsonl(tmp_path / name, [{"text": "one"}, {"text": "two\nlines", "id": 5}, {"body": "x", "text": ""}], gz)
    path.write_bytes(path.read_bytes() + (gzip.compress(b"\n\n") if gz else b"\n\n"))  # blank lines are skipped
    assert docs(path) == ["one", "two\nlines", ""]


def test_jsonl_text_field_is_configurable(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"content": "hello"}])
    assert docs(path, text_field="content") == ["hello"]


def test_parquet_is_read_in_batches_across_row_groups(tmp_path, write_parquet):
    texts = [f"doc {i}" for i in range(2500)]
    path = write_parquet(tmp_path / "a.parquet", {"id": list(range(2500)), "text": texts}, row_group_size=700)
    assert docs(path) == texts


def test_parquet_null_text_is_an_empty_document(tmp_path, write_parquet):
    path = write_parquet(tmp_path / "a.parquet", {"text": ["a", None, "c"]})
    assert docs(path) == ["a", "", "c"]


def test_a_bad_jsonl_line_can_be_reported_and_skipped(tmp_path, write_jsonl):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, "{broken", {"text": 3}, {"text": "also ok"}])
    problems = []
    assert docs(path, on_error=problems.append) == ["ok", "also ok"]
    assert [str(p).split(": ")[0] for p in problems] == [f"{path}:2", f"{path}:3"]


def _bad_inputs(tmp: Path, write_jsonl, write_parquet):
    """(path, words the one-line error must contain) for each kind of bad input."""
    (tmp / "bin.txt").write_bytes(b"abc\0def")
    (tmp / "latin1.txt").write_bytes("caf".encode() + "é".encode("latin-1") + b" au lait")
    write_jsonl(tmp / "malformed.jsonl", [{"text": "fine"}, '{"text": "unterminated'])
    write_jsonl(tmp / "nofield.jsonl", [{"body": "x"}])
    write_jsonl(tmp / "number.jsonl", [{"text": "a"}, {"text": "b"}, {"text": 42}])
    write_jsonl(tmp / "array.jsonl", [["text"]])
    write_jsonl(tmp / "badutf8.jsonl", ['{"text": "ok"}'])
    (tmp / "badutf8.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    full = gzip.compress(b'{"text": "a"}\n' * 2000)
    (tmp / "truncated.jsonl.gz").write_bytes(full[: len(full) // 2])
    (tmp / "notgzip.jsonl.gz").write_bytes(b'{"text": "plain"}\n')
    write_parquet(tmp / "nocolumn.parquet", {"body": ["x"]})
    write_parquet(tmp / "intcolumn.parquet", {"text": [1, 2]})
    (tmp / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    return [
        ("bin.txt", ["binary file", "NUL byte at offset 3"]),
        ("latin1.txt", ["invalid UTF-8", "byte offset 3"]),
        ("malformed.jsonl", ["malformed.jsonl:2", "malformed JSON"]),
        ("nofield.jsonl", ["nofield.jsonl:1", "no 'text' field", "body", "--text-field"]),
        ("number.jsonl", ["number.jsonl:3", "'text' is int", "expected a string"]),
        ("array.jsonl", ["array.jsonl:1", "expected a JSON object"]),
        ("badutf8.jsonl", ["badutf8.jsonl:2", "invalid UTF-8"]),
        ("truncated.jsonl.gz", ["truncated.jsonl.gz", "truncated or corrupt gzip"]),
        ("notgzip.jsonl.gz", ["notgzip.jsonl.gz", "truncated or corrupt gzip"]),
        ("nocolumn.parquet", ["no column 'text'", "body"]),
        ("intcolumn.parquet", ["column 'text' is int64", "expected a string"]),
        ("corrupt.parquet", ["corrupt.parquet", "not a readable Parquet file"]),
    ]


def test_every_kind_of_bad_input_is_one_line_naming_the_file(tmp_path, write_jsonl, write_parquet):
    for name, words in _bad_inputs(tmp_path, write_jsonl, write_parquet):
        with pytest.raises(UserError) as info:
            docs(tmp_path / name)
        message = str(info.value)
        assert "\n" not in message and str(tmp_path / name) in message, message
        for word in words:
            assert word in message, (name, message)


def test_documents_larger_than_max_doc_bytes_are_refused(tmp_path, write_jsonl, write_parquet):
    (tmp_path / "big.txt").write_text("x" * 101)
    write_jsonl(tmp_path / "big.jsonl", [{"text": "small"}, {"text": "y" * 200}])
    write_parquet(tmp_path / "big.parquet", {"text": ["ok", "é" * 60]})
    for name, where in [("big.txt", "big.txt:"), ("big.jsonl", "big.jsonl:2:"), ("big.parquet", "big.parquet: row 2:")]:
        with pytest.raises(UserError, match="exceeds max_doc_bytes") as info:
            docs(tmp_path / name, max_doc_bytes=100)
        assert where in str(info.value)
