"""Curriculum: order the train split by a difficulty score and cut it into stages that the loader walks in order.

`megalang data tokenize` writes the train documents sorted by score (stable, so ties keep corpus order); stage k is
then one contiguous token range, recorded in the shard manifest. Window boundaries depend on train.seq_len, so
the loader turns token ranges into window ranges itself, shuffles windows within each stage and walks the stages
in order during the first epoch only; later epochs shuffle the whole split (see docs/data.md, "Curriculum").
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import CurriculumConfig
from megalang.data.documents import read_prepared_manifest
from megalang.data.shards import ShardWriter
from megalang.errors import UserError
from megalang.store.files import sha256_file

_SCRATCH = ".curriculum"  # inside the staging folder; removed before the manifest hashes the folder


def is_active(cfg: CurriculumConfig) -> bool:
    return cfg.by != "none"


def column_name(cfg: CurriculumConfig) -> str | None:
    return cfg.by[len("column:"):] if cfg.by.startswith("column:") else None


# --- scores -------------------------------------------------------------------------------------------


class Scorer:
    """The difficulty of each document, called once per document in prepared order (train and val alike).

    `length` counts tokens (EOS included), `chars` characters; `column:NAME` reads a number per document from
    `scores`, a file keyed by the prepared documents' `id` (made by any scorer the user runs over the prepared
    Parquet files: a classifier, perplexity under a small model, a readability formula).
    """

    def __init__(self, cfg: CurriculumConfig):
        self.by, self.column = cfg.by, column_name(cfg)
        self.table: dict[str, float] | None = None
        if self.column and not cfg.scores:
            raise UserError(f"curriculum.by={cfg.by}: needs curriculum.scores, a Parquet or JSONL file with the "
                            f"prepared documents' id and a numeric {self.column} column")
        if self.column:
            self.table = load_score_file(cfg.scores, self.column)

    def __call__(self, doc_id: str, n_chars: int, ids: np.ndarray) -> float:
        if self.by == "length":
            return float(len(ids))
        if self.by == "chars":
            return float(n_chars)
        if doc_id not in self.table:
            raise UserError(f"curriculum.scores: no row with id {doc_id} (every prepared document needs a score); "
                            "score every document of the prepared folder")
        return self.table[doc_id]


def check_score(value: Any, field: str, doc_id: str) -> float:
    """A finite number, or a UserError naming the field: a NaN or a string would make the order meaningless."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{field}: document {doc_id} has score {value!r}, expected a finite number; "
                        "fix the column or choose another curriculum.by")
    return float(value)


def load_score_file(path: str | Path, column: str) -> dict[str, float]:
    """id → score from a Parquet or JSON Lines file (one float per document; O(documents) memory)."""
    path = Path(path)
    field = f"curriculum.by=column:{column}"
    if not path.is_file():
        raise UserError(f"curriculum.scores: {path} not found; give a Parquet or JSONL file with id and {column}")
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
            missing = [c for c in ("id", column) if c not in names]
            if missing:
                raise UserError(f"{field}: {path} has no column {', '.join(missing)} (columns: {', '.join(names)})")
            table = pq.read_table(path, columns=["id", column]).to_pydict()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"curriculum.scores: {path} is not a readable Parquet file ({e}); re-create it") from None
        return {str(i): check_score(v, field, str(i)) for i, v in zip(table["id"], table[column])}
    try:
        return read_jsonl_scores(path, column, field)
    except UnicodeDecodeError as e:
        raise UserError(f"curriculum.scores: {path} is not UTF-8 JSON Lines ({e.reason}); re-create it") from None


def read_jsonl_scores(path: Path, column: str, field: str) -> dict[str, float]:
    scores = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"curriculum.scores: {path}:{lineno}: malformed JSON ({e.msg}); fix the line") from None
            if not isinstance(record, dict) or "id" not in record or column not in record:
                raise UserError(f"{field}: {path}:{lineno} has no 'id' and '{column}' fields; add them")
            scores[str(record["id"])] = check_score(record[column], field, str(record["id"]))
    return scores


# --- writing the ordered train split ------------------------------------------------------------------


class CurriculumWriter:
    """Collects the train documents unordered in a scratch shard, then writes them sorted into the real train
    writer and describes the stages. Costs one extra copy of the train tokens on disk while it runs, and a few
    8-byte numbers per document in memory (score, offsets, order) — never the tokens themselves."""

    def __init__(self, cfg: CurriculumConfig, staging: Path, dtype: np.dtype):
        self.cfg = cfg
        self.scratch = staging / _SCRATCH
        self.scratch.mkdir()
        self.unordered = ShardWriter(self.scratch, "train", dtype, tokens_per_shard=1 << 62)  # one file
        self.scores: list[float] = []

    def add(self, ids: np.ndarray, score: float) -> None:
        self.unordered.add(ids)
        self.scores.append(score)

    def write(self, out: ShardWriter) -> dict[str, Any]:
        """Copy the documents into `out` in curriculum order; return the manifest's `curriculum` entry."""
        files = self.unordered.close()["files"]
        scores = np.asarray(self.scores, dtype=np.float64)
        if not files:  # no train document at all: tokenize reports that
            shutil.rmtree(self.scratch)
            return self.describe(np.zeros(0, np.int64), scores, np.zeros(0, np.int64))
        tokens = np.memmap(self.scratch / files[0], dtype=out.dtype, mode="r")
        ends = np.fromfile(self.scratch / files[1], dtype=np.uint64).astype(np.int64)
        starts = np.concatenate(([0], ends[:-1]))
        order = np.argsort(-scores if self.cfg.order == "hard_first" else scores, kind="stable")
        for i in order.tolist():
            out.add(tokens[starts[i]:ends[i]])
        lengths = (ends - starts)[order]
        stage = assign_stages(scores[order], lengths, self.cfg)
        del tokens
        shutil.rmtree(self.scratch)
        return self.describe(stage, scores[order], lengths)

    def describe(self, stage: np.ndarray, scores: np.ndarray, lengths: np.ndarray) -> dict[str, Any]:
        """Per stage: its document and token range in the written split and its score range."""
        count = len(self.cfg.boundaries) + 1 if self.cfg.boundaries else self.cfg.stages
        first_token = np.concatenate(([0], np.cumsum(lengths)))
        stages = []
        for k in range(count):
            docs = np.flatnonzero(stage == k)
            first = int(docs[0]) if len(docs) else int(np.searchsorted(stage, k))
            stages.append({
                "first_document": first, "documents": int(len(docs)),
                "first_token": int(first_token[first]), "tokens": int(lengths[docs].sum()),
                "score_min": float(scores[docs].min()) if len(docs) else None,
                "score_max": float(scores[docs].max()) if len(docs) else None,
            })
        info = {"by": self.cfg.by, "order": self.cfg.order, "boundaries": list(self.cfg.boundaries),
                "epochs": "first epoch in stages, later epochs shuffled globally", "stages": stages}
        if self.cfg.scores:
            info["scores"] = {"path": str(Path(self.cfg.scores).resolve()), "sha256": sha256_file(self.cfg.scores)}
        return info


def assign_stages(sorted_scores: np.ndarray, lengths: np.ndarray, cfg: CurriculumConfig) -> np.ndarray:
    """Stage of each document in curriculum order (non-decreasing).

    Explicit boundaries cut by score; otherwise each stage gets an equal share of the tokens (by where a document
    starts), so stages of short documents hold as many training steps as stages of long ones.
    """
    if cfg.boundaries:
        stage = np.searchsorted(np.asarray(cfg.boundaries, dtype=np.float64), sorted_scores, side="right")
        return len(cfg.boundaries) - stage if cfg.order == "hard_first" else stage
    total = int(lengths.sum())
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else np.zeros(0, np.int64)
    return np.minimum(starts * cfg.stages // max(total, 1), cfg.stages - 1)


# --- reading: stages as window ranges -----------------------------------------------------------------


def stage_windows(info: dict[str, Any] | None, seq_len: int, num_samples: int) -> list[int] | None:
    """Window index at which each stage of the manifest's `curriculum` entry starts, then num_samples; None
    without a curriculum.

    Window i starts at token i·seq_len and belongs to the stage holding that token, so a window at a stage
    boundary may end in the next stage's first document.
    """
    if not info:
        return None
    starts = [min(-(-s["first_token"] // seq_len), num_samples) for s in info["stages"]]
    return starts + [num_samples]


def staged_permutation(seed: int, bounds: list[int]) -> np.ndarray:
    """Each stage's windows shuffled on their own (seeded per stage), stages in order."""
    parts = [a + np.random.default_rng([seed, 0, k]).permutation(b - a) for k, (a, b) in enumerate(zip(bounds, bounds[1:]))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


# --- the resolved mixture -----------------------------------------------------------------------------


def resolved_mixture(prepared_root: str | Path) -> dict[str, Any]:
    """The prepare stage's source weights, carried into the shard manifest so training data is described in one
    place: a weight is the number of passes (epochs) over that source's documents per pass over the shards."""
    mixture = read_prepared_manifest(prepared_root).get("mixture")
    if not mixture:
        return {}
    # Sources that match no pattern keep weight 1 (one epoch).
    return {"mixture": {pattern: {**stats, "epochs": stats["weight"]} for pattern, stats in mixture.items()}}
