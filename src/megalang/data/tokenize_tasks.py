"""`data tokenize --executor ray`: encode tasks over slices of the corpus, then one task per output shard.

1. **encode tasks**, one per run of whole Parquet row groups (up to `task_docs` documents, in prepared order):
   token ids + EOS of every document to `_encoded/enc-NNNNNN.bin` (spilled, in order), and back to this process
   only each document's token count, split (the same `SplitRouter`) and curriculum score.
2. **this process**: the split of the last document (a tiny corpus whose hash split chose no val, as in
   `write_routed`) and each split's shard boundaries (`shard_bounds`, ShardWriter's rule).
3. **shard tasks**, one per output shard: copy its documents' ids from the encoded files into
   `{split}-NNNNN.bin/.idx` through `ShardWriter`.

So every shard holds the documents, in the order and with the ids, that the one-process path writes: the same
bytes (`tests/data/test_executors_ray.py`). With a curriculum the train documents must be reordered by score
before they are cut into shards, so the shards are written in this process (`write_routed`, reading the encoded
files); the encoding still runs in parallel.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import TokenizeConfig
from megalang.data import curriculum as cur
from megalang.data.documents import read_prepared_manifest
from megalang.data.encoding import SplitRouter, encode_documents, write_routed
from megalang.data.shards import SPLITS, ShardWriter, shard_bounds
from megalang.errors import UserError, naming


@dataclass(frozen=True)
class EncodeTask:
    index: int
    path: str  # a prepared docs-NNNNN.parquet
    row_groups: list[int]
    documents: int


@dataclass
class Encoded:
    """What an encode task sends back: per document, in order, its token count (EOS included), whether it goes to
    val and its curriculum score (None without a curriculum)."""

    index: int
    lengths: np.ndarray
    val: np.ndarray
    scores: np.ndarray | None


@dataclass(frozen=True)
class ShardTask:
    """One output shard: for each of its documents, in order, the encoded file and the token range there."""

    split: str
    shard: int
    files: list[str]
    file_of: np.ndarray
    starts: np.ndarray
    stops: np.ndarray


def plan_encode_tasks(root: str, task_docs: int) -> list[EncodeTask]:
    """Runs of consecutive row groups of the prepared files, up to `task_docs` documents each (at least one row
    group); they depend only on the prepared folder, never on the worker count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = read_prepared_manifest(root)
    tasks: list[EncodeTask] = []
    for name in sorted(n for n in manifest["files"] if n.startswith("docs-") and n.endswith(".parquet")):
        path = str(Path(root) / name)
        try:
            meta = pq.ParquetFile(path).metadata
        except FileNotFoundError:
            raise UserError(f"{path}: missing; the prepared folder is incomplete, re-run `megalang data prepare`") from None
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: unreadable ({str(e).splitlines()[0]}); run `megalang verify {root}`") from None
        groups: list[int] = []
        docs = 0
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if groups and docs + rows > task_docs:
                tasks.append(EncodeTask(len(tasks), path, groups, docs))
                groups, docs = [], 0
            groups.append(g)
            docs += rows
        if groups:
            tasks.append(EncodeTask(len(tasks), path, groups, docs))
    return tasks


def encoded_path(spill: str | Path, index: int) -> Path:
    return Path(spill) / f"enc-{index:06d}.bin"


def tokenize_on_ray(cfg: TokenizeConfig, tmp: Path, eos: int, dtype: np.dtype) -> tuple[dict[str, dict], dict[str, Any]]:
    """Write the shards of `cfg.input` under `tmp` with Ray tasks; return (splits, extra) as `write_routed` does."""
    from megalang.data.executors import executor_session, resolve_workers, run_tasks

    workers = resolve_workers(cfg.workers)
    tasks = plan_encode_tasks(cfg.input, cfg.task_docs)  # a damaged prepared folder fails here, before Ray starts
    spill = tmp / "_encoded"
    spill.mkdir()
    try:
        with executor_session("ray", workers):
            def run(fn, items, phase):
                return list(run_tasks(fn, items, "ray", workers, progress=False, phase=phase))

            return _tokenize_tasks(cfg, tasks, tmp, spill, eos, dtype, run)
    finally:
        shutil.rmtree(spill)  # the manifest hashes every file left under tmp


def _tokenize_tasks(cfg: TokenizeConfig, tasks: list[EncodeTask], tmp: Path, spill: Path, eos: int, dtype: np.dtype,
                    run) -> tuple[dict[str, dict], dict[str, Any]]:
    encoded = run(functools.partial(encode_task, cfg=cfg, spill=str(spill), eos=eos, dtype=dtype), tasks,
                  "tokenize.encode")
    counts = [len(e.lengths) for e in encoded]
    lengths = np.concatenate([e.lengths for e in encoded]) if encoded else np.empty(0, np.int64)
    val = np.concatenate([e.val for e in encoded]) if encoded else np.empty(0, bool)
    if len(val) and cfg.val_fraction > 0 and not val.any():
        val[-1] = True  # as write_routed: val was asked for, the hash chose none, the last document becomes val
    files = [str(encoded_path(spill, e.index)) for e in encoded]
    file_of = np.repeat(np.arange(len(encoded)), counts)
    file_start = np.cumsum([0] + [int(e.lengths.sum()) for e in encoded])[:-1]
    stops = np.cumsum(lengths) - np.repeat(file_start, counts)  # each document's end inside its encoded file
    starts = stops - lengths
    if cur.is_active(cfg.curriculum):
        scores = np.concatenate([e.scores for e in encoded]) if encoded else np.empty(0)
        routed = (("val" if v else "train", np.fromfile(files[f], dtype=dtype, count=b - a, offset=a * dtype.itemsize), s)
                  for f, a, b, v, s in zip(file_of.tolist(), starts.tolist(), stops.tolist(), val.tolist(), scores.tolist()))
        return write_routed(cfg, tmp, dtype, routed)
    shard_tasks = []
    for split in SPLITS:
        docs = np.flatnonzero(val if split == "val" else ~val)
        for k, (a, b) in enumerate(shard_bounds(lengths[docs], cfg.tokens_per_shard)):
            mine = docs[a:b]
            shard_tasks.append(ShardTask(split, k, files, file_of[mine], starts[mine], stops[mine]))
    written = run(functools.partial(write_shard, root=str(tmp), dtype=dtype), shard_tasks, "tokenize.shards")
    splits = {s: {"files": [], "tokens": 0, "documents": 0} for s in SPLITS}
    for task, info in zip(shard_tasks, written):
        out = splits[task.split]
        out["files"] += info["files"]
        out["tokens"] += info["tokens"]
        out["documents"] += info["documents"]
    return splits, {}


def encode_task(task: EncodeTask, cfg: TokenizeConfig, spill: str, eos: int, dtype: np.dtype) -> Encoded:
    """Encode one slice of the corpus to its spill file; return the per-document lengths, splits and scores."""
    import pyarrow.parquet as pq

    from megalang.data.tokenizer import load_tokenizer

    # The task holds one of Ray's CPUs; without this the Rust encoder starts a thread per core in every task. (Read
    # once per worker process, when the encoder first runs there; every encode task sets the same value.)
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    tokenizer = load_tokenizer(cfg.tokenizer)
    router = SplitRouter(cfg.val_sources, cfg.val_fraction)
    scorer = cur.Scorer(cfg.curriculum) if cur.is_active(cfg.curriculum) else None
    batches = pq.ParquetFile(task.path).iter_batches(batch_size=1024, row_groups=task.row_groups,
                                                     columns=["id", "text", "source"])
    rows = (row for batch in batches for row in batch.to_pylist())
    lengths, val, scores = [], [], []
    path = encoded_path(spill, task.index)
    with open(path, "wb") as out, naming(path):  # a retried task rewrites the file from the start
        for doc_id, source, n_chars, ids in encode_documents(rows, tokenizer, eos, dtype, cfg.batch_docs):
            out.write(ids.tobytes())
            lengths.append(len(ids))
            val.append(router.split(doc_id, source) == "val")
            if scorer:
                scores.append(scorer(doc_id, n_chars, ids))
    return Encoded(task.index, np.asarray(lengths, np.int64), np.asarray(val, bool),
                   np.asarray(scores, np.float64) if scorer else None)


def write_shard(task: ShardTask, root: str, dtype: np.dtype) -> dict[str, Any]:
    """Shard task: copy the documents into `{split}-{shard}.bin/.idx` (one file pair: the cut is already made)."""
    writer = ShardWriter(Path(root), task.split, dtype, tokens_per_shard=1 << 62, first=task.shard)
    encoded = {f: np.memmap(task.files[f], dtype=dtype, mode="r") for f in np.unique(task.file_of).tolist()}
    for f, start, stop in zip(task.file_of.tolist(), task.starts.tolist(), task.stops.tolist()):
        writer.add(encoded[f][start:stop])
    return writer.close()
