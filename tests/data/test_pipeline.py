"""data/pipeline.py and data/steps.py: the document steps, their counts, exact dedup, the Parquet output and reading it back."""

from __future__ import annotations

import json
import unicodedata

import pyarrow.parquet as pq
import pytest

from megalang.cli.artifacts import verify
from megalang.config import PrepareConfig
from megalang.data.documents import Doc, iter_prepared
from megalang.data.pipeline import prepare
from megalang.data.records import META_COLUMNS
from megalang.data.steps import KNOWN_STEPS, LengthFilter, Normalize, StepRunner, StepStats, build_steps
from megalang.errors import UserError
from megalang.store.files import sha256_text

CAFE_NFC = unicodedata.normalize("NFC", "café au lait, served hot")
CAFE_NFD = unicodedata.normalize("NFD", CAFE_NFC)


# These tests are about the pipeline's mechanics, on tiny documents the default chain's quality rules would drop
# (and near-dedup would merge, being templated): they run the minimal chain unless they say otherwise. The default
# chain itself is tested in test_prepare_defaults.py.
MINIMAL_STEPS = ["normalize", "length", "exact_dedup"]


def cfg(tmp_path, **kw) -> PrepareConfig:
    return PrepareConfig(**{"inputs": [str(tmp_path / "in")], "out": str(tmp_path / "out"), "steps": MINIMAL_STEPS,
                            **kw})


def write_inputs(tmp_path, files: dict[str, str]):
    for rel, text in files.items():
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / rel).write_text(text, encoding="utf-8")


# --- steps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form, text, expect",
    [
        ("NFC", f"  {CAFE_NFD}\n\n", CAFE_NFC),
        ("NFKC", "ﬁle ①\n", "file 1"),
        ("none", f"\t{CAFE_NFD} ", CAFE_NFD),
    ],
)
def test_normalize_applies_the_unicode_form_and_strips(tmp_path, form, text, expect):
    step = Normalize(cfg(tmp_path, normalize=form))
    assert step(Doc(text, "s")).text == expect


def test_normalize_keeps_inner_whitespace_of_code(tmp_path):
    code = "def f():\n\tif x:\n        return  1\n"
    assert Normalize(cfg(tmp_path))(Doc(code, "s")).text == code.strip()


def test_length_drops_empty_and_short_documents(tmp_path):
    step = LengthFilter(cfg(tmp_path, min_chars=5))
    assert [step(Doc(t, "s")) is not None for t in ["", "abcd", "abcde"]] == [False, False, True]
    assert LengthFilter(cfg(tmp_path, min_chars=0))(Doc("", "s")) is None


def test_unknown_step_names_are_listed(tmp_path):
    with pytest.raises(UserError, match="unknown step.*minhash.*known: normalize, length, exact_dedup"):
        build_steps(cfg(tmp_path, steps=["normalize", "minhash"]))
    assert set(KNOWN_STEPS) >= {"normalize", "length", "exact_dedup"}


def test_step_runner_counts_documents_and_bytes_per_step(tmp_path):
    runner = StepRunner(build_steps(cfg(tmp_path, min_chars=3)))
    outcomes = [runner(Doc(t, "s")) for t in ["  héllo ", "x", "héllo", "ok!"]]
    # exact_dedup has no per-document part (the corpus phase decides it, see the stage tests below)
    assert [(d.text, n) if d else None for d, n in outcomes] == [("héllo", 6), None, ("héllo", 6), ("ok!", 3)]
    assert (runner.documents_in, runner.bytes_in) == (4, 19)
    stats = runner.stats
    assert stats["normalize"] == StepStats(documents_in=4, documents_removed=0, bytes_in=19, bytes_out=16)
    assert stats["length"] == StepStats(documents_in=4, documents_removed=1, bytes_in=16, bytes_out=15)
    assert "exact_dedup" not in stats


# --- the stage --------------------------------------------------------------------------------------


def test_prepare_writes_parquet_docs_and_a_manifest_with_counts(tmp_path, write_jsonl):
    write_inputs(tmp_path, {
        "a.py": "def alpha():\n    return 1\n",
        "b/c.md": CAFE_NFD,
        "b/dup.txt": "def alpha():\n    return 1\n\n\n",  # same text as a.py once stripped
        "b/tiny.txt": "short",
        "b/notes.docx": "unknown type",
    })
    write_jsonl(tmp_path / "in" / "d.jsonl", [{"text": CAFE_NFC}, {"text": "a third, distinct document"}])
    manifest = prepare(cfg(tmp_path, min_chars=10))
    counts = manifest["counts"]
    assert manifest["stage"] == "data.prepare"
    assert {k: counts[k] for k in ("files", "files_skipped", "documents_in", "documents_out")} == {
        "files": 5, "files_skipped": 1, "documents_in": 6, "documents_out": 3}
    assert (counts["removed_normalize"], counts["removed_length"], counts["removed_exact_dedup"]) == (0, 1, 2)
    rows = list(iter_prepared(tmp_path / "out"))
    assert [r["text"] for r in rows] == ["def alpha():\n    return 1", CAFE_NFC, "a third, distinct document"]
    assert [r["source"].rsplit("/", 1)[-1] for r in rows] == ["a.py", "c.md", "d.jsonl"]
    assert [r["id"] for r in rows] == [sha256_text(r["text"])[:16] for r in rows]
    assert counts["bytes_out"] == sum(len(r["text"].encode()) for r in rows)
    assert len(manifest["inputs"]) == 5 and all(i["kind"] == "raw" and len(i["sha256"]) == 64 for i in manifest["inputs"])
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]["min_chars"] == 10
    assert verify(tmp_path / "out") == []


def test_output_rolls_over_to_a_new_parquet_file_every_docs_per_file(tmp_path):
    write_inputs(tmp_path, {f"{i:02d}.txt": f"document number {i}" for i in range(7)})
    manifest = prepare(cfg(tmp_path, docs_per_file=3))
    names = sorted(n for n in manifest["files"] if n.endswith(".parquet"))
    assert names == ["docs-00000.parquet", "docs-00001.parquet", "docs-00002.parquet"]
    assert [pq.ParquetFile(tmp_path / "out" / n).metadata.num_rows for n in names] == [3, 3, 1]
    assert pq.read_schema(tmp_path / "out" / names[0]).names == ["id", "text", "source", "kind", *META_COLUMNS]
    assert [r["text"] for r in iter_prepared(tmp_path / "out")] == [f"document number {i}" for i in range(7)]


def test_an_empty_corpus_is_an_error_and_leaves_no_output(tmp_path):
    write_inputs(tmp_path, {"a.txt": "tiny", "b.txt": "   \n"})
    with pytest.raises(UserError, match=r"empty corpus: no documents left after filtering \(2 read from 2 files; "
                                        r"removed normalize=0, length=2, exact_dedup=0\)"):
        prepare(cfg(tmp_path))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_skip_mode_skips_bad_files_and_lines_and_lists_them(tmp_path, write_jsonl):
    write_inputs(tmp_path, {"good.txt": "a perfectly good document"})
    (tmp_path / "in" / "bad.txt").write_bytes(b"\0\0binary")
    write_jsonl(tmp_path / "in" / "mixed.jsonl", [{"text": "a good line of JSONL"}, "{nope", {"text": "another good line"}])
    with pytest.raises(UserError, match="bad.txt: binary file"):
        prepare(cfg(tmp_path))
    manifest = prepare(cfg(tmp_path, errors="skip"))
    assert manifest["counts"]["documents_out"] == 3 and manifest["counts"]["errors_skipped"] == 2
    assert [e.split(": ")[0].rsplit("/", 1)[-1] for e in manifest["errors"]] == ["bad.txt", "mixed.jsonl:2"]


def test_iter_prepared_refuses_other_folders(tmp_path, tokenizer_dir):
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="plain: no manifest.json"):
        next(iter_prepared(tmp_path / "plain"))
    with pytest.raises(UserError, match="is a 'tokenizer.train' artifact, not prepared documents"):
        next(iter_prepared(tokenizer_dir))


def test_mixture_weights_up_and_down_sample_by_source_and_are_recorded(tmp_path):
    write_inputs(tmp_path, {f"books/{i:02d}.txt": f"book number {i} text" for i in range(10)}
                 | {f"web/{i:02d}.txt": f"web page number {i}" for i in range(40)})
    manifest = prepare(cfg(tmp_path, workers=1, mixture={"books/*": 2.5, "web/*": 0.25}))
    texts = [r["text"] for r in iter_prepared(tmp_path / "out")]
    books = [t for t in texts if t.startswith("book")]
    web = [t for t in texts if t.startswith("web")]
    assert all(2 <= books.count(f"book number {i} text") <= 3 for i in range(10))
    assert 20 <= len(books) <= 30 and 3 <= len(web) <= 18
    mix = manifest["mixture"]
    assert mix["books/*"] == {"weight": 2.5, "documents_in": 10, "documents_out": len(books),
                              "bytes_out": sum(len(t) for t in books)}
    assert mix["web/*"]["documents_out"] == len(web) and manifest["counts"]["documents_out"] == len(texts)
    again = prepare(cfg(tmp_path, workers=1, mixture={"books/*": 2.5, "web/*": 0.25}, out=str(tmp_path / "again")))
    assert again["files"] == manifest["files"]  # the sampling is a function of the document, not of chance
