"""Shared fixtures for the data stages: a small real-code corpus, and the artifacts made from it (session-scoped,
so the tokenizer is trained once per test session)."""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from megalang.config import PrepareConfig, TokenizeConfig, TokenizerTrainConfig

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Real Python of several styles (~150 KB); every CPython 3.10+ has these files.
MODULES = ["textwrap.py", "heapq.py", "bisect.py", "shlex.py", "fnmatch.py", "glob.py", "string.py", "copy.py",
           "colorsys.py", "keyword.py", "queue.py", "sched.py", "csv.py", "json/decoder.py", "json/encoder.py",
           "json/__init__.py"]
PROSE = [
    "Unicode prose: naïve café, Straße, Ελληνικά, русский текст, 日本語のテキスト, 한국어 문장.",
    "Emoji and symbols: 🙂🚀 ✓ → ∑ ≤ ≥ — “quotes” and ‘single’ ones.",
    "Tabs\tand  double  spaces,\n\n\nblank lines, trailing spaces   \nand a final line.",
]
TOKENIZER_VOCAB = 500


def write_code_corpus(root: Path) -> Path:
    """Copies of the stdlib modules plus a JSONL file of prose; returns the corpus folder."""
    for rel in MODULES:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STDLIB / rel, dst)
    with open(root / "prose.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(PROSE * 4):
            f.write(json.dumps({"text": f"{text} (#{i})", "meta": i}, ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return write_code_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def prepared_dir(corpus_dir, tmp_path_factory) -> Path:
    from megalang.data.pipeline import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare(PrepareConfig(inputs=[str(corpus_dir)], out=str(out)))
    return out


@pytest.fixture(scope="session")
def tokenizer_vocab() -> int:
    return TOKENIZER_VOCAB


@pytest.fixture(scope="session")
def tokenizer_dir(prepared_dir, tmp_path_factory) -> Path:
    from megalang.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    train_tokenizer(TokenizerTrainConfig(input=str(prepared_dir), out=str(out), vocab_size=TOKENIZER_VOCAB))
    return out


@pytest.fixture(scope="session")
def shards_dir(prepared_dir, tokenizer_dir, tmp_path_factory) -> Path:
    from megalang.data.tokenize import tokenize

    out = tmp_path_factory.mktemp("shards") / "shards"
    tokenize(TokenizeConfig(input=str(prepared_dir), tokenizer=str(tokenizer_dir), out=str(out),
                            val_fraction=0, val_sources=["json/*"], tokens_per_shard=4096))
    return out


def _write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    """Records are dicts (dumped as JSON) or raw strings (written as they are, for malformed lines)."""
    import gzip

    data = "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _write_parquet(path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


@pytest.fixture
def write_jsonl():
    return _write_jsonl


@pytest.fixture
def write_parquet():
    return _write_parquet
