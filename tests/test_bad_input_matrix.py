"""The bad-input matrix of docs/reliability.md: each row is one bad input run through the real CLI. Every one
must exit with code 2, print one line naming the file or field, and leave no output that looks complete (no
manifest.json, no COMPLETE.json, no OUT.tmp/).

Rows are (stage, id) → a builder that damages a copy of the session's tiny pipeline (tests/tiny_pipeline.py)
and returns the command, the words its message must contain and the outputs that must not look complete.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from tiny_pipeline import Pipeline, cli, copy_tree, pipeline_for, train_args


@dataclass
class Case:
    args: list
    words: list[str]
    outputs: list[Path] = field(default_factory=list)
    file_size_limit: int | None = None  # run as a subprocess under RLIMIT_FSIZE (bytes)


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> Path:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    write(folder / "manifest.json", json.dumps(manifest))
    return folder


def prepare(source: Path, tmp: Path, *words: str, extra=()) -> Case:
    out = tmp / "docs"
    return Case(["data", "prepare", "-i", source, "-o", out, *extra], [*words], [out])


def train(p: Pipeline, tmp: Path, shards: Path | None = None, *extra: str, words=()) -> Case:
    run = tmp / "run"
    return Case(train_args(shards or p.shards, run, *extra), list(words), [run])


def export(run: Path, tmp: Path, *words: str, extra=()) -> Case:
    out = tmp / "hf"
    return Case(["export", "--run", run, "--out", out, *extra], [*words], [out])


def choice_set(tmp: Path, *lines: str) -> Path:
    return write(tmp / "set.jsonl", "".join(line + "\n" for line in lines))


GOOD_Q = '{"question": "2+2?", "choices": ["3", "4"], "answer": 1}'


def _run_file(p, tmp):
    (tmp / "taken").write_text("a file, not a folder")
    return Case(train_args(p.shards, tmp / "taken"), [str(tmp / "taken"), "a file is in the way"])


def _truncated_gzip(p, tmp):
    data = gzip.compress(b"".join(json.dumps({"text": f"document {i}"}).encode() + b"\n" for i in range(3000)))
    return prepare(write(tmp / "d.jsonl.gz", data[: len(data) // 2]), tmp, "d.jsonl.gz", "truncated or corrupt gzip")


def _truncated_checkpoint(p, tmp):
    run = copy_tree(p.run, tmp / "r")
    data = run / "checkpoints" / "step-2" / "__0_0.distcp"
    data.write_bytes(data.read_bytes()[:1000])
    return export(run, tmp, "step-2")


def _flipped_checkpoint_byte(p, tmp):
    """Same size, one byte changed: only the SHA-256 in COMPLETE.json can tell (promise 5, integrity)."""
    run = copy_tree(p.run, tmp / "r")
    data = run / "checkpoints" / "step-2" / "__0_0.distcp"
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    data.write_bytes(bytes(damaged))
    return export(run, tmp, "__0_0.distcp", "step-2")


def _no_complete_checkpoint(p, tmp):
    run = copy_tree(p.run, tmp / "r")
    for ckpt in (run / "checkpoints").iterdir():
        (ckpt / "COMPLETE.json").unlink()
    return export(run, tmp, str(run), "no complete checkpoint")


def _metrics_on_a_full_disk(p, tmp):
    """A real ENOSPC from the kernel: metrics.jsonl is a link to /dev/full, which refuses every write."""
    run = tmp / "run"
    run.mkdir()
    os.symlink("/dev/full", run / "metrics.jsonl")
    return Case(train_args(p.shards, run), [str(run / "metrics.jsonl"), "No space left on device", "disk is full"],
                [run])


CASES: dict[str, Callable[[Pipeline, Path], Case]] = {
    # --- corpora: megalang data prepare ---
    "corpus-missing-path": lambda p, tmp: prepare(tmp / "nowhere", tmp, "nowhere", "no such file or folder"),
    "corpus-empty-file": lambda p, tmp: prepare(write(tmp / "c" / "empty.txt", ""), tmp, "empty corpus"),
    "corpus-binary-file": lambda p, tmp: prepare(
        write(tmp / "c" / "blob.txt", b"\x00\x01\x02 not text"), tmp, "blob.txt", "binary file"),
    "corpus-invalid-utf8": lambda p, tmp: prepare(
        write(tmp / "latin.txt", b"caf\xe9 cr\xe8me"), tmp, "latin.txt", "invalid UTF-8 at byte offset 3"),
    "corpus-truncated-gzip": _truncated_gzip,
    "corpus-huge-line": lambda p, tmp: prepare(
        write(tmp / "one-line.txt", "x" * 10_000), tmp, "one-line.txt", "exceeds max_doc_bytes",
        extra=["--set", "max_doc_bytes=4096"]),
    "corpus-malformed-jsonl": lambda p, tmp: prepare(
        write(tmp / "d.jsonl", '{"text": "a fine line of text"}\n{"text": broken}\n'), tmp, "d.jsonl:2",
        "malformed JSON"),
    "corpus-jsonl-missing-text": lambda p, tmp: prepare(
        write(tmp / "d.jsonl", '{"content": "text under another key"}\n'), tmp, "d.jsonl:1", "no 'text' field",
        "--text-field"),
    "corpus-jsonl-text-not-a-string": lambda p, tmp: prepare(
        write(tmp / "d.jsonl", '{"text": 12345}\n'), tmp, "d.jsonl:1", "field 'text' is int, expected a string"),
    # --- configs: megalang train ---
    "config-unknown-key": lambda p, tmp: train(p, tmp, None, "bogus.key=1", words=["bogus", "unknown key"]),
    "config-wrong-type": lambda p, tmp: train(p, tmp, None, "train.max_steps=abc", words=["train.max_steps"]),
    "config-yaml-syntax-error": lambda p, tmp: Case(
        ["train", write(tmp / "bad.yaml", "train:\n  max_steps: [1\n")], ["bad.yaml", "line 3", "invalid YAML"]),
    "config-recipe-missing": lambda p, tmp: Case(["train", tmp / "nope.yaml"], ["nope.yaml", "recipe not found"]),
    "config-run-dir-is-a-file": _run_file,
    "config-out-under-a-file": lambda p, tmp: Case(
        ["data", "prepare", "-i", p.corpus, "-o", write(tmp / "plain-file", "x") / "docs"],
        ["plain-file/docs", "cannot create the output folder", "Not a directory"]),
    # --- tokenizer ---
    "tokenizer-missing-folder": lambda p, tmp: Case(
        ["data", "tokenize", "-i", p.data, "--tokenizer", tmp / "no-tok", "-o", tmp / "sh"], ["no-tok", "no such folder"],
        [tmp / "sh"]),
    "tokenizer-corrupt-json": lambda p, tmp: Case(
        ["data", "tokenize", "-i", p.data, "--tokenizer", write(copy_tree(p.tokenizer, tmp / "tok") / "tokenizer.json",
                                                              "{not json").parent, "-o", tmp / "sh"],
        ["tokenizer.json", "not a valid tokenizer.json"], [tmp / "sh"]),
    "tokenizer-vocab-too-large": lambda p, tmp: Case(
        ["tokenizer", "train", "-i", p.data, "-o", tmp / "tok", "--vocab-size", 100_000],
        ["--vocab-size 100000", "at most"], [tmp / "tok"]),
    # --- token shards: megalang train ---
    "shards-missing-manifest": lambda p, tmp: train(
        p, tmp, _without_manifest(copy_tree(p.shards, tmp / "sh")), words=["sh", "no manifest.json"]),
    "shards-wrong-dtype": lambda p, tmp: train(
        p, tmp, edit_manifest(copy_tree(p.shards, tmp / "sh"), lambda m: m.update(dtype="float32")),
        words=["manifest.json", "dtype 'float32'"]),
    "shards-truncated-bin": lambda p, tmp: train(p, tmp, _truncate_bin(copy_tree(p.shards, tmp / "sh")),
                                                 words=["train-00000.bin"]),
    "shards-manifest-escapes-folder": lambda p, tmp: train(
        p, tmp, edit_manifest(copy_tree(p.shards, tmp / "sh"), _point_outside), words=["../outside.bin", "outside"]),
    # --- checkpoints: megalang export / resume ---
    "checkpoint-missing-step": lambda p, tmp: export(p.run, tmp, "step 99", "complete steps: 1, 2",
                                                     extra=["--step", 99]),
    "checkpoint-truncated-file": _truncated_checkpoint,
    "checkpoint-flipped-byte": _flipped_checkpoint_byte,
    "checkpoint-none-complete": _no_complete_checkpoint,
    # --- export ---
    "export-out-exists": lambda p, tmp: export(p.run, write(tmp / "hf" / "keep.txt", "mine").parent.parent,
                                               "already exists"),
    "export-not-a-run": lambda p, tmp: export(p.shards, tmp, str(p.shards), "not a run folder"),
    # --- eval data: megalang eval choice ---
    "eval-bad-jsonl": lambda p, tmp: Case(
        ["eval", "choice", "--model", p.export, "--data", choice_set(tmp, GOOD_Q, "{oops"), "--out", tmp / "r.json"],
        ["set.jsonl:2", "not valid JSON"], [tmp / "r.json"]),
    "eval-missing-field": lambda p, tmp: Case(
        ["eval", "choice", "--model", p.export, "--data", choice_set(tmp, '{"question": "q", "choices": ["a", "b"]}'),
         "--out", tmp / "r.json"], ["set.jsonl:1", "missing answer"], [tmp / "r.json"]),
    "eval-missing-model": lambda p, tmp: Case(
        ["eval", "choice", "--model", tmp / "no-model", "--data", choice_set(tmp, GOOD_Q)], ["no-model", "no such"]),
    # --- disk full, read-only and pseudo filesystems ---
    "disk-full-metrics": _metrics_on_a_full_disk,
    "disk-file-size-limit": lambda p, tmp: Case(
        ["data", "tokenize", "-i", p.data, "--tokenizer", p.tokenizer, "-o", tmp / "sh"],
        ["sh.tmp/train-00000.bin", "File too large"], [tmp / "sh"], file_size_limit=16_384),
    "disk-file-size-limit-parquet": lambda p, tmp: Case(
        ["data", "prepare", "-i", p.corpus, "-o", tmp / "docs"], ["docs.tmp/", ".parquet", "File too large"],
        [tmp / "docs"], file_size_limit=16_384),
    "disk-file-size-limit-checkpoint": lambda p, tmp: Case(
        train_args(p.shards, tmp / "run"), ["checkpoint save (rank 0)", "step-1.tmp", "File too large"],
        [tmp / "run"], file_size_limit=65_536),
    # We run as root, so chmod cannot make a folder read-only; sysfs and procfs refuse new folders even to root.
    "output-read-only-sysfs": lambda p, tmp: Case(
        ["data", "prepare", "-i", p.corpus, "-o", "/sys/megalang-bad-input"],
        ["/sys/megalang-bad-input", "cannot create the output folder", "Operation not permitted"]),
    "output-under-procfs": lambda p, tmp: Case(
        ["tokenizer", "train", "-i", p.data, "-o", "/proc/megalang-bad-input"],
        ["/proc/megalang-bad-input", "cannot create the output folder"]),
}


def _without_manifest(folder: Path) -> Path:
    (folder / "manifest.json").unlink()
    return folder


def _truncate_bin(folder: Path) -> Path:
    path = folder / "train-00000.bin"
    path.write_bytes(path.read_bytes()[:-1])
    return folder


def _point_outside(manifest: dict) -> None:
    manifest["splits"]["train"]["files"] = ["../outside.bin", "../outside.idx"]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> Pipeline:
    return pipeline_for(tmp_path_factory)


def run_limited(args: list, limit: int) -> tuple[int, list[str]]:
    """`python -m megalang ARGS` with files capped at `limit` bytes; SIGXFSZ ignored so writes fail with EFBIG
    (what a full quota or a small filesystem looks like to the writer) instead of killing the process."""

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    result = subprocess.run([sys.executable, "-m", "megalang", *map(str, args)], preexec_fn=cap,
                            capture_output=True, text=True, timeout=300)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return result.returncode, lines


def assert_looks_unfinished(out: Path) -> None:
    """No output that a later stage (or a person) could take for a complete artifact."""
    assert not out.with_name(out.name + ".tmp").exists(), out
    if out.is_dir():
        assert not (out / "manifest.json").exists(), out
        assert not list(out.rglob("COMPLETE.json")), out
        assert not list(out.rglob("*.safetensors")), out
    elif out.suffix == ".json":
        assert not out.exists(), out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(pipe, tmp_path, name):
    case = CASES[name](pipe, tmp_path)
    if case.file_size_limit:
        code, lines = run_limited(case.args, case.file_size_limit)
        crash = None
    else:
        code, lines, crash = cli(*case.args)
    assert crash is None and code == 2, (lines, crash)
    # Progress lines from steps that did run may come first; the failure itself is one line, the last.
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines
    for word in case.words:
        assert word in errors[0], (word, errors[0])
    for out in case.outputs:
        assert_looks_unfinished(out)


def test_the_matrix_has_at_least_25_rows_over_every_stage():
    stages = {name.split("-")[0] for name in CASES}
    assert len(CASES) >= 25
    assert {"corpus", "config", "tokenizer", "shards", "checkpoint", "export", "eval", "disk", "output"} <= stages
