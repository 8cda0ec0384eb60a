"""A whole tiny pipeline made through the real CLI (corpus → documents → tokenizer → shards → 2-step debug run →
export), built once per test session and shared by the safe-loading and bad-input tests. Tests copy what
they damage; the built folders stay pristine."""

from __future__ import annotations

import functools
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from megalang.cli import app

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ("textwrap.py", "heapq.py", "bisect.py", "shlex.py", "fnmatch.py", "string.py")  # ~75 KB of real code
RUNNER = CliRunner()


@dataclass(frozen=True)
class Pipeline:
    corpus: Path
    data: Path
    tokenizer: Path
    shards: Path
    run: Path
    export: Path


def cli(*args) -> tuple[int, list[str], BaseException | None]:
    """(exit code, non-empty output lines, the exception if the command crashed) of `megalang ARGS`."""
    result = RUNNER.invoke(app, [str(a) for a in args])
    crash = result.exception if not isinstance(result.exception, SystemExit) else None
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()], crash


def train_args(shards: Path, run: Path, *extra: str) -> list[str]:
    """A 2-step debug-preset run, checkpointing every step, with nothing slow switched on."""
    return ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={run}", "train.max_steps=2",
            "train.seq_len=32", "train.micro_batch_size=2", "train.device=cpu", "train.progress=false",
            "train.eval_batches=1", "checkpoint.every=1", "metrics.report=false", "metrics.system=false", *extra]


def _ok(*args) -> None:
    code, lines, crash = cli(*args)
    assert code == 0 and crash is None, (args, lines, crash)


@functools.lru_cache(maxsize=None)
def build_pipeline(root: Path) -> Pipeline:
    p = Pipeline(*(root / name for name in ("corpus", "data", "tok", "shards", "run", "export")))
    p.corpus.mkdir(parents=True)
    for name in MODULES:
        shutil.copyfile(STDLIB / name, p.corpus / name)
    _ok("data", "prepare", "-i", p.corpus, "-o", p.data)
    _ok("tokenizer", "train", "-i", p.data, "-o", p.tokenizer, "--vocab-size", 400)
    _ok("data", "tokenize", "-i", p.data, "--tokenizer", p.tokenizer, "-o", p.shards, "--val-fraction", 0.2)
    _ok(*train_args(p.shards, p.run))
    _ok("export", "--run", p.run, "--out", p.export)
    return p


def pipeline_for(tmp_path_factory) -> Pipeline:
    """The session's pipeline (one per session, whichever module asks first)."""
    return build_pipeline(tmp_path_factory.getbasetemp() / "tiny-pipeline")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
