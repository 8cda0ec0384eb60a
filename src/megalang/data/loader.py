"""Deterministic, resumable, rank-aware batches over a packed token split.

Sample i of the split is the window of seq_len+1 tokens starting at i·seq_len (no padding: documents are
already separated by EOS). Which sample comes at global position g is a pure function of (seed, epoch, g),
so a resume needs only the count of consumed samples, and changing the number of ranks keeps the order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from megalang.data.curriculum import stage_windows, staged_permutation
from megalang.data.shards import TokenSplit
from megalang.errors import UserError


def num_windows(split: TokenSplit, seq_len: int) -> int:
    """Full windows of seq_len+1 tokens (overlapping by one) that fit in the split."""
    return max(0, (len(split) - 1) // seq_len)


class PositionalLoader:
    """What every training loader shares: the item at global position g is a pure function of (seed, epoch, g),
    ranks take consecutive blocks of micro_batch items, and a resume needs only `consumed`.

    Subclasses set seq_len, micro_batch, seed, rank, world, num_samples and consumed, and implement batch_at.
    """

    source = "data.shards"  # named in the resume error
    unit = "windows"

    seq_len: int
    micro_batch: int
    seed: int
    world: int
    num_samples: int
    consumed: int

    @property
    def epoch(self) -> int:
        return self.consumed // self.num_samples

    def batch_at(self, consumed: int) -> Any:
        raise NotImplementedError

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.batch_at(self.consumed)
        self.consumed += self.micro_batch * self.world
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "epoch": self.epoch, "num_samples": self.num_samples,
                "seq_len": self.seq_len, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples or state["seq_len"] != self.seq_len:
            raise UserError(
                f"{self.source}: the checkpoint's loader read {state['num_samples']} {self.unit} of "
                f"{state['seq_len']} tokens, the data now gives {self.num_samples} of {self.seq_len}; "
                "resume with the same data and train.seq_len, or start a new run.dir"
            )
        self.consumed = int(state["consumed"])


class SampleLoader(PositionalLoader):
    """Micro-batches of (input_ids, labels), each [micro_batch, seq_len] int64, for one data-parallel rank.

    Global positions are dealt out in blocks of micro_batch·world: at each micro-step, rank r takes
    positions [consumed + r·micro_batch, consumed + (r+1)·micro_batch). A global batch is `accum` such
    blocks, so with micro_batch·world·accum fixed every optimizer step sees the same samples on any world
    size, and `consumed` always names an exact prefix of the global order.

    `curriculum` (the shard manifest's entry; see data/curriculum.py) makes the first epoch walk its stages in
    order, shuffled within each; later epochs shuffle the whole split.
    """

    def __init__(self, split: TokenSplit, seq_len: int, micro_batch: int, seed: int, rank: int = 0, world: int = 1,
                 curriculum: dict[str, Any] | None = None):
        self.split, self.seq_len, self.micro_batch = split, seq_len, micro_batch
        self.seed, self.rank, self.world = seed, rank, world
        self.num_samples = num_windows(split, seq_len)
        if self.num_samples == 0:
            raise UserError(
                f"data.shards: the train split has {len(split)} tokens, fewer than train.seq_len+1 "
                f"({seq_len + 1}); tokenize more data or lower train.seq_len"
            )
        self.consumed = 0  # global samples handed out over all ranks
        self.stages = stage_windows(curriculum, seq_len, self.num_samples)  # None: no curriculum
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        # Keep only the current and the next epoch's order: a global batch can straddle one boundary.
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            if epoch == 0 and self.stages:
                self._perms[epoch] = staged_permutation(self.seed, self.stages)
            else:
                self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
        return self._perms[epoch]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stages": self.stages}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        # A resume must replay the same order: the curriculum (or its absence) is part of it.
        if state.get("stages") != self.stages:
            raise UserError(
                f"{self.source}: the checkpoint's loader used curriculum stages {state.get('stages')}, the data now "
                f"gives {self.stages}; resume with the same shards and data.curriculum, or start a new run.dir"
            )

    def sample_index(self, position: int) -> int:
        """Which window the global position `position` reads."""
        epoch, offset = divmod(position, self.num_samples)
        return int(self.permutation(epoch)[offset])

    def batch_at(self, consumed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's micro-batch when `consumed` global samples came before it."""
        first = consumed + self.rank * self.micro_batch
        rows = [self.split.window(self.sample_index(p) * self.seq_len, self.seq_len + 1)
                for p in range(first, first + self.micro_batch)]
        tokens = torch.from_numpy(np.stack(rows))
        return tokens[:, :-1], tokens[:, 1:]


def eval_batches(
    split: TokenSplit, seq_len: int, micro_batch: int, max_batches: int, rank: int = 0, world: int = 1
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation micro-batches: the first windows of the split in order, dealt out like SampleLoader.

    The same windows every evaluation, so val losses of different steps (and runs) compare directly.
    """
    n = min(num_windows(split, seq_len), max_batches * micro_batch * world)
    for block in range(0, n, micro_batch * world):
        first = block + rank * micro_batch
        # The last block may be short (a small val split): a rank can get fewer rows, or none.
        rows = [split.window(i * seq_len, seq_len + 1) for i in range(first, min(first + micro_batch, n))]
        if rows:
            tokens = torch.from_numpy(np.stack(rows))
            yield tokens[:, :-1], tokens[:, 1:]
