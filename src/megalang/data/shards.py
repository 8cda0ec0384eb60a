"""Packed token shards: `{split}-NNNNN.bin` (flat uint16/uint32 ids) + `.idx` (uint64 document end offsets).

Readable with plain `numpy.memmap`; megalang is not needed to read them back.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from megalang.errors import UserError, naming
from megalang.store.manifest import artifact_file, read_manifest

SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class ShardWriter:
    """Appends documents to `{split}-NNNNN.bin/.idx`, starting a new pair past `tokens_per_shard` (NNNNN counts
    from `first`: a parallel writer writes shard `first` alone, see `shard_bounds`)."""

    root: Path
    split: str
    dtype: np.dtype
    tokens_per_shard: int
    first: int = 0
    files: list[str] = field(default_factory=list)
    tokens: int = 0
    documents: int = 0
    _bin: Any = None
    _ends: list[int] = field(default_factory=list)
    _in_shard: int = 0

    def add(self, ids: np.ndarray) -> None:
        if self._bin is None or self._in_shard >= self.tokens_per_shard:
            self._close_shard()
            name = f"{self.split}-{self.first + len(self.files) // 2:05d}"
            self._bin = open(self.root / f"{name}.bin", "wb")
            self.files += [f"{name}.bin", f"{name}.idx"]
        ids = np.asarray(ids)
        if ids.size and ids.dtype != self.dtype and (ids.min() < 0 or ids.max() > np.iinfo(self.dtype).max):
            # A silent wrap-around would train on the wrong tokens; this is a bug in the caller, not user input.
            raise ValueError(f"token ids outside {self.dtype} range: min {ids.min()}, max {ids.max()}")
        with naming(self._bin.name):  # a full disk is reported against the shard being written
            self._bin.write(ids.astype(self.dtype, copy=False).tobytes())
        self._in_shard += len(ids)
        self._ends.append(self._in_shard)
        self.tokens += len(ids)
        self.documents += 1

    def _close_shard(self) -> None:
        if self._bin is None:
            return
        self._bin.close()
        idx = self.root / self.files[-1]
        np.asarray(self._ends, dtype=np.uint64).tofile(idx)
        self._bin, self._ends, self._in_shard = None, [], 0

    def close(self) -> dict[str, Any]:
        self._close_shard()
        return {"files": list(self.files), "tokens": self.tokens, "documents": self.documents}


def shard_bounds(lengths: np.ndarray, tokens_per_shard: int) -> list[tuple[int, int]]:
    """[start, stop) document ranges of the shards `ShardWriter` makes from documents of these token lengths (each
    at least 1): a shard takes documents until it holds `tokens_per_shard` tokens or more, then the next begins."""
    ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    bounds, start = [], 0
    while start < len(lengths):
        stop = min(int(np.searchsorted(ends, ends[start] + tokens_per_shard, side="left")), len(lengths))
        bounds.append((start, stop))
        start = stop
    return bounds


class TokenSplit:
    """One split of a shard folder as a single token sequence (memory-mapped, nothing loaded)."""

    def __init__(self, bins: list[np.memmap], ends: list[np.ndarray]):
        self.bins = bins
        self.doc_ends = ends
        self.starts = [0]
        for b in bins:
            self.starts.append(self.starts[-1] + len(b))

    def __len__(self) -> int:
        return self.starts[-1]

    @property
    def num_documents(self) -> int:
        return sum(len(e) for e in self.doc_ends)

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) across shard boundaries, as int64."""
        if start < 0 or start + length > len(self):
            raise IndexError(f"window [{start}, {start + length}) outside {len(self)} tokens")
        out = np.empty(length, dtype=np.int64)
        i = bisect.bisect_right(self.starts, start) - 1
        pos, filled = start - self.starts[i], 0
        while filled < length:
            take = min(length - filled, len(self.bins[i]) - pos)
            out[filled : filled + take] = self.bins[i][pos : pos + take]
            filled += take
            i, pos = i + 1, 0
        return out

    def documents(self):
        """Yield each document's tokens (int64), in order."""
        for b, ends in zip(self.bins, self.doc_ends):
            prev = 0
            for end in ends.tolist():
                yield np.asarray(b[prev:end], dtype=np.int64)
                prev = end


def open_split(root: str | Path, split: str, manifest: dict[str, Any] | None = None) -> TokenSplit:
    root = Path(root)
    manifest = manifest or read_shard_manifest(root)
    info = manifest["splits"].get(split)
    if not info or not info["files"]:
        raise UserError(f"{root}: shard folder has no '{split}' split; re-run `megalang data tokenize`")
    dtype = shard_dtype(root, manifest)
    bins, ends = [], []
    for name in info["files"]:
        if not name.endswith(".bin"):
            continue
        path = artifact_file(root, name)
        if not path.is_file() or not path.with_suffix(".idx").is_file():
            raise UserError(f"{path}: shard file missing; the folder is incomplete, re-run `megalang data tokenize`")
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise UserError(f"{path}: size {size} is not a multiple of {dtype} ({dtype.itemsize} bytes); file truncated")
        bins.append(np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype))
        ends.append(np.fromfile(path.with_suffix(".idx"), dtype=np.uint64))
        last_end = int(ends[-1][-1]) if len(ends[-1]) else 0
        if last_end != len(bins[-1]):
            raise UserError(f"{path}: {len(bins[-1])} tokens but its .idx ends at {last_end}; the shard is damaged, "
                            "run `megalang verify` and re-run `megalang data tokenize`")
    return TokenSplit(bins, ends)


def shard_dtype(root: Path, manifest: dict[str, Any]) -> np.dtype:
    """The manifest's token dtype, which must be one the writer produces: any other would reinterpret the bytes."""
    if manifest.get("dtype") not in ("uint16", "uint32"):
        raise UserError(f"{root / 'manifest.json'}: dtype {manifest.get('dtype')!r} is not uint16 or uint32; "
                        "re-run `megalang data tokenize`")
    return np.dtype(manifest["dtype"])


def read_shard_manifest(root: str | Path) -> dict[str, Any]:
    return read_manifest(root, "data.tokenize", "token shards", "megalang data tokenize")
