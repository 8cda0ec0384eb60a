"""Near-duplicate removal spread over tasks (what `data prepare --executor ray` runs): no process holds every signature.

The map tasks have already spilled each part's MinHash signatures to `part-NNNNNN.sig.npy`. Then:

1. **band tasks**, one per part: the LSH bucket key of every band of the part's live documents, written to one
   file per *partition* (`bands-PART-PARTITION.npy`: band, key, global index). A (band, key) bucket falls in
   partition `key % partitions`, so every member of a bucket, from any part, lands in the same partition.
2. **bucket tasks**, one per partition: read that partition's entries from every part, form the buckets of each
   band and verify each candidate pair against the full signatures (memory-mapped rows, read a block of pairs at
   a time); return the verified edges.
3. **this process**: the connected components of the edges (union-find, root = smallest index).

The edges are exactly the single-process ones (`dedup.near_duplicate_mask`): the same buckets, the same head (the
first live document of a bucket in corpus order, since each partition's entries are read in part order and part
rows are ascending) and the same verification; and components do not depend on the order edges arrive in. So
the survivors, and with them the output bytes, are the same; `tests/data/test_executors_ray.py` checks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megalang.data.dedup import MinHashParams, Signatures, band_keys, clusters, verified_pairs

ENTRIES_PER_PARTITION = 8 << 20  # (band, key, index) entries one bucket task reads: 18 bytes each, ~150 MB
ENTRY = np.dtype([("band", "<u2"), ("key", "<u8"), ("index", "<i8")])


@dataclass(frozen=True)
class BandTask:
    """One part's signatures: the file, the global index of its first row and which of its rows are live."""

    index: int
    signatures: str
    offset: int
    valid: np.ndarray


def partition_count(live: int, bands: int, workers: int) -> int:
    """Enough partitions that each holds at most ENTRIES_PER_PARTITION entries, and at least two per worker (so a
    slow partition does not leave a worker idle). The count never changes the result, only the balance."""
    return max(2 * workers, -(-live * bands // ENTRIES_PER_PARTITION), 1)


def band_file(spill: Path | str, part: int, partition: int) -> Path:
    return Path(spill) / f"bands-{part:06d}-{partition:05d}.npy"


def near_duplicates_partitioned(sig_files: list[str], valid: np.ndarray, params: MinHashParams, spill: Path,
                                run, workers: int) -> tuple[np.ndarray, np.ndarray]:
    """(removed, survivor) for the documents whose signatures are the rows of `sig_files` in order (the same as
    `near_duplicate_mask`). `valid`: live documents with a signature. `run(fn, tasks, phase)` runs the tasks
    (on Ray, in `data prepare`) and yields their results in task order; `spill` is a folder every task can write."""
    lengths = [int(np.load(f, mmap_mode="r").shape[0]) for f in sig_files]
    offsets = np.cumsum([0] + lengths)
    partitions = partition_count(int(valid.sum()), params.bands, workers)
    spill.mkdir(parents=True, exist_ok=True)
    tasks = [BandTask(i, f, int(offsets[i]), valid[offsets[i] : offsets[i + 1]]) for i, f in enumerate(sig_files)]
    list(run(functools.partial(write_band_keys, params=params, partitions=partitions, spill=str(spill)), tasks,
             "prepare.near_dedup.bands"))
    bucket = functools.partial(bucket_partition, parts=len(sig_files), sig_files=sig_files, params=params,
                               spill=str(spill))
    edges = list(run(bucket, list(range(partitions)), "prepare.near_dedup.buckets"))
    return clusters(int(offsets[-1]), np.concatenate(edges) if edges else np.empty((0, 2), np.int64))


def write_band_keys(task: BandTask, params: MinHashParams, partitions: int, spill: str) -> int:
    """Band task: write the (band, key, global index) entries of the part's live rows, one file per partition,
    band by band and rows ascending within a band. Returns the number of entries written."""
    sigs = np.load(task.signatures, mmap_mode="r")
    rows = np.flatnonzero(task.valid)
    by_partition: list[list[np.ndarray]] = [[] for _ in range(partitions)]
    for band in range(params.bands):
        keys = band_keys(np.asarray(sigs[rows, band * params.rows : (band + 1) * params.rows]))
        entries = np.empty(len(rows), dtype=ENTRY)
        entries["band"], entries["key"], entries["index"] = band, keys, rows + task.offset
        where = (keys % np.uint64(partitions)).astype(np.int64)
        order = np.argsort(where, kind="stable")  # stable: rows stay ascending inside each partition
        bounds = np.searchsorted(where[order], np.arange(partitions + 1))
        for p in range(partitions):
            by_partition[p].append(entries[order[bounds[p] : bounds[p + 1]]])
    for p, chunks in enumerate(by_partition):
        # A retried task (its worker died) rewrites its files whole: np.save replaces the earlier attempt's file.
        np.save(band_file(spill, task.index, p), np.concatenate(chunks) if chunks else np.empty(0, ENTRY))
    return len(rows) * params.bands


def bucket_partition(partition: int, parts: int, sig_files: list[str], params: MinHashParams, spill: str) -> np.ndarray:
    """Bucket task: the verified edges (int64 × 2) of every bucket in this partition, over all parts."""
    entries = np.concatenate([np.load(band_file(spill, part, partition)) for part in range(parts)]) if parts else \
        np.empty(0, ENTRY)
    sigs = Signatures([np.load(f, mmap_mode="r") for f in sig_files], valid=np.empty(0, bool))
    edges = []
    for band in range(params.bands):
        mine = entries[entries["band"] == band]  # parts in order, rows ascending: corpus order
        edges.append(verified_pairs(sigs, mine["index"], mine["key"], params.min_similarity))
    return np.concatenate(edges) if edges else np.empty((0, 2), np.int64)
