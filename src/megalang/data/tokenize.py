"""`megalang data tokenize`: prepared documents → packed train/val token shards, EOS after every document."""

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
from megalang.data.documents import iter_prepared, read_prepared_manifest
from megalang.data.shards import SPLITS, ShardWriter, token_dtype
from megalang.data.sources import matches_any
from megalang.data.tokenizer import load_tokenizer, read_tokenizer_manifest
from megalang.errors import UserError
from megalang.store.files import sha256_file, staging_dir
from megalang.store.manifest import MANIFEST, describe_input, write_manifest

STAGE = "data.tokenize"
_SPECIAL_IDS = ("bos_id", "eos_id", "pad_id", "unk_id")
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


def tokenize(cfg: TokenizeConfig) -> dict[str, Any]:
    """Encode every prepared document, append EOS, write it to the train or val shards; return the manifest."""
    read_prepared_manifest(cfg.input)
    tok_manifest = read_tokenizer_manifest(cfg.tokenizer)
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab_size, eos = tok_manifest["vocab_size"], tok_manifest["eos_id"]
    if tokenizer.get_vocab_size() != vocab_size:
        raise UserError(f"{cfg.tokenizer}: tokenizer.json has {tokenizer.get_vocab_size()} tokens, manifest says "
                        f"{vocab_size}; re-run `megalang tokenizer train`")
    dtype = token_dtype(vocab_size)
    router = SplitRouter(cfg.val_sources, cfg.val_fraction)
    scorer = cur.Scorer(cfg.curriculum) if cur.is_active(cfg.curriculum) else None
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        writers = {s: ShardWriter(tmp, s, dtype, cfg.tokens_per_shard) for s in SPLITS}
        staged = cur.CurriculumWriter(cfg.curriculum, tmp, dtype) if scorer else None

        def add(split: str, ids: np.ndarray, score: float | None) -> None:
            # With a curriculum the train documents wait in a scratch shard until every score is known.
            if staged and split == "train":
                staged.add(ids, score)
            else:
                writers[split].add(ids)

        pending = None  # held back one document, so the last one can still go to val (see below)
        for doc_id, source, n_chars, ids in encode_documents(cfg.input, tokenizer, eos, dtype, cfg.batch_docs):
            if pending is not None:
                add(*pending)
            pending = (router.split(doc_id, source), ids, scorer(doc_id, n_chars, ids) if scorer else None)
        if pending is not None:
            # A val split was asked for but the hash chose none (tiny corpus): the last document becomes val.
            asked_for_val = cfg.val_fraction > 0
            add("val" if asked_for_val and writers["val"].documents == 0 else pending[0], *pending[1:])
        extra = {"curriculum": staged.write(writers["train"])} if staged else {}
        extra.update(cur.resolved_mixture(cfg.input))
        splits = {s: w.close() for s, w in writers.items()}
        check_splits(splits, cfg)
        tokenizer_dir = Path(cfg.tokenizer).resolve()
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(),
            inputs=[describe_input(cfg.input), describe_input(cfg.tokenizer)],
            counts={
                "documents": sum(s["documents"] for s in splits.values()),
                "tokens": sum(s["tokens"] for s in splits.values()),
                **{f"{s}_{what}": splits[s][what] for s in SPLITS for what in ("tokens", "documents")},
            },
            dtype=dtype.name,
            vocab_size=vocab_size,
            **{k: tok_manifest[k] for k in _SPECIAL_IDS},
            tokenizer_sha256=sha256_file(tokenizer_dir / MANIFEST),
            tokenizer_path=str(tokenizer_dir),
            splits=splits,
            **extra,
        )


def encode_documents(root: str, tokenizer, eos: int, dtype: np.dtype, batch_docs: int) -> Iterator[tuple[str, str, int, np.ndarray]]:
    """(id, source, characters, token ids + EOS) per document, in prepared order.

    Batches go through the Rust encoder (all cores, GIL released) on a helper thread while this thread turns
    the previous batch into arrays and the caller routes and writes them, so the encoder does not wait for the
    Python side between batches. At most two batches are in memory."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for batch in _batches(root, batch_docs):
            encoding = pool.submit(_encode, tokenizer, batch)
            if pending is not None:
                yield from _with_eos(*pending, eos, dtype)
            pending = (batch, encoding)
        if pending is not None:
            yield from _with_eos(*pending, eos, dtype)


def _batches(root: str, batch_docs: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    chars = 0
    for row in iter_prepared(root):
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


def check_splits(splits: dict[str, dict], cfg: TokenizeConfig) -> None:
    if splits["train"]["documents"] == 0:
        raise UserError(f"{cfg.input}: every document went to val, none to train; loosen --val-source or "
                        "lower --val-fraction, or prepare more documents")
    if cfg.val_sources and cfg.val_fraction == 0 and splits["val"]["documents"] == 0:
        raise UserError(f"--val-source {' '.join(cfg.val_sources)}: matched no document source in {cfg.input}; "
                        "check the patterns (they match the absolute source path or any tail of it)")
