"""Prepared documents → token ids with EOS, routed to train or val, written to shards in order: what the one-process
tokenize path and its Ray tasks (data/tokenize_tasks.py) share, so both make the same decisions and bytes."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import TokenizeConfig
from megalang.data import curriculum as cur
from megalang.data.shards import SPLITS, ShardWriter
from megalang.data.sources import matches_any

_BATCH_CHARS = 4 << 20


class SplitRouter:
    """Decides train or val per document: by source glob first, else by a hash of the document id.

    The hash makes the split independent of corpus order and keeps identical documents on the same side.
    """

    def __init__(self, val_sources: list[str], val_fraction: float):
        self.patterns = list(val_sources)
        self.threshold = int(val_fraction * 2**64)
        # Documents from one JSONL/Parquet file share a source: match each path once.
        self.source_is_val = functools.lru_cache(maxsize=65536)(self._source_is_val)

    def split(self, doc_id: str, source: str) -> str:
        if self.patterns and self.source_is_val(source):
            return "val"
        return "val" if self.hash_is_val(doc_id) else "train"

    def hash_is_val(self, doc_id: str) -> bool:
        digest = hashlib.sha256(f"megalang-val:{doc_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") < self.threshold

    def _source_is_val(self, source: str) -> bool:
        return matches_any(source, self.patterns)


def write_routed(cfg: TokenizeConfig, tmp: Path, dtype: np.dtype,
                 routed: Iterator[tuple[str, np.ndarray, float | None]]) -> tuple[dict[str, dict], dict[str, Any]]:
    """Write (split, ids, curriculum score) documents, in order, to the shards under `tmp`; return each split's
    files and counts, and the curriculum's description (when one is set)."""
    writers = {s: ShardWriter(tmp, s, dtype, cfg.tokens_per_shard) for s in SPLITS}
    staged = cur.CurriculumWriter(cfg.curriculum, tmp, dtype) if cur.is_active(cfg.curriculum) else None

    def add(split: str, ids: np.ndarray, score: float | None) -> None:
        # With a curriculum the train documents wait in a scratch shard until every score is known.
        if staged and split == "train":
            staged.add(ids, score)
        else:
            writers[split].add(ids)

    pending = None  # held back one document, so the last one can still go to val (see below)
    for doc in routed:
        if pending is not None:
            add(*pending)
        pending = doc
    if pending is not None:
        # A val split was asked for but the hash chose none (tiny corpus): the last document becomes val.
        asked_for_val = cfg.val_fraction > 0
        add("val" if asked_for_val and writers["val"].documents == 0 else pending[0], *pending[1:])
    extra = {"curriculum": staged.write(writers["train"])} if staged else {}
    return {s: w.close() for s, w in writers.items()}, extra


def encode_documents(rows: Iterator[dict], tokenizer, eos: int, dtype: np.dtype,
                     batch_docs: int) -> Iterator[tuple[str, str, int, np.ndarray]]:
    """(id, source, characters, token ids + EOS) per prepared row (id, text, source), in order.

    Batches go through the Rust encoder (all cores, GIL released) on a helper thread while this thread turns
    the previous batch into arrays and the caller routes and writes them, so the encoder does not wait for the
    Python side between batches. At most two batches are in memory."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in _batches(rows, batch_docs):
            encoding = pool.submit(_encode, tokenizer, batch)
            if pending is not None:
                yield from _with_eos(*pending, eos, dtype)
            pending = (batch, encoding)
        if pending is not None:
            yield from _with_eos(*pending, eos, dtype)


def _batches(rows: Iterator[dict], batch_docs: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    chars = 0
    for row in rows:
        batch.append(row)
        chars += len(row["text"])
        # Also bounded by size: an Encoding costs ~100 bytes per token, so 1024 large files could take gigabytes.
        if len(batch) == batch_docs or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _encode(tokenizer, batch: list[dict]) -> list:
    # encode_batch_fast: the same ids as encode_batch without computing character offsets, which nothing here reads.
    return tokenizer.encode_batch_fast([row["text"] for row in batch], add_special_tokens=False)


def _with_eos(batch: list[dict], encoding: Future, eos: int, dtype: np.dtype) -> Iterator[tuple[str, str, int, np.ndarray]]:
    for row, enc in zip(batch, encoding.result()):
        tokens = enc.ids  # a new Python list on every access
        ids = np.empty(len(tokens) + 1, dtype=dtype)
        ids[:-1] = tokens
        ids[-1] = eos
        yield row["id"], row["source"], len(row["text"]), ids
