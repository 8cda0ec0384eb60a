"""data/loader.py: sample order is a pure function of (seed, epoch, position), independent of world size,
and resumable from the consumed-sample count, mid-epoch and across epoch boundaries."""

from collections import Counter

import numpy as np
import pytest
import torch

from megalang.data.loader import SampleLoader, eval_batches
from megalang.data.shards import ShardWriter, open_split
from megalang.errors import UserError

SEQ = 4


def make_split(tmp_path, n_tokens, tokens_per_shard=50):
    # Token i has value i, so every row names its own window: window k starts with token k·SEQ.
    tmp_path.mkdir(parents=True, exist_ok=True)
    w = ShardWriter(tmp_path, "train", np.dtype(np.uint16), tokens_per_shard)
    for start in range(0, n_tokens, 30):  # several documents and several .bin files
        w.add(np.arange(start, min(start + 30, n_tokens)))
    return open_split(tmp_path, "train", {"dtype": "uint16", "splits": {"train": w.close()}})


@pytest.fixture
def split(tmp_path):
    return make_split(tmp_path, 41)  # (41-1)//4 = 10 windows


def windows(batch):
    """Window ids of a micro-batch's rows."""
    return [int(row[0]) // SEQ for row in batch[0]]


def global_steps(split, world, micro, accum, steps, seed=3):
    """Per optimizer step, the multiset of windows read by all ranks together."""
    loaders = [SampleLoader(split, SEQ, micro, seed, rank=r, world=world) for r in range(world)]
    out = []
    for _ in range(steps):
        seen = Counter()
        for _ in range(accum):
            for loader in loaders:
                seen.update(windows(next(loader)))
        out.append(seen)
    return out


def test_rows_are_windows_with_labels_shifted_by_one(split):
    loader = SampleLoader(split, SEQ, micro_batch=3, seed=0)
    input_ids, labels = next(loader)
    assert input_ids.shape == labels.shape == (3, SEQ) and input_ids.dtype == torch.int64
    assert torch.equal(input_ids[:, 1:], labels[:, :-1])
    assert torch.equal(labels[:, -1], input_ids[:, -1] + 1)
    assert all(int(r[0]) % SEQ == 0 for r in input_ids)


def test_order_is_the_seeded_permutation_of_each_epoch(split):
    loader = SampleLoader(split, SEQ, micro_batch=5, seed=11)
    got = [w for _ in range(4) for w in windows(next(loader))]  # two epochs of 10
    assert got[:10] == np.random.default_rng([11, 0]).permutation(10).tolist()
    assert got[10:] == np.random.default_rng([11, 1]).permutation(10).tolist()
    assert got[:10] != got[10:]
    assert loader.epoch == 2


def test_global_batches_do_not_depend_on_world_size(split):
    # 8 samples per optimizer step, as 1×4×2, 2×2×2 and 4×1×2 (ranks × accum × micro); 5 steps cross 3 epochs.
    one = global_steps(split, world=1, micro=2, accum=4, steps=5)
    assert one == global_steps(split, world=2, micro=2, accum=2, steps=5)
    assert one == global_steps(split, world=4, micro=2, accum=1, steps=5)
    assert one == global_steps(split, world=2, micro=4, accum=1, steps=5)


def test_ranks_read_disjoint_rows(split):
    a, b = (SampleLoader(split, SEQ, 2, seed=0, rank=r, world=2) for r in (0, 1))
    ids = windows(next(a)) + windows(next(b))
    assert len(set(ids)) == 4


@pytest.mark.parametrize("consumed_batches", [2, 4, 7])  # mid-epoch, on a boundary, straddling one
def test_resume_continues_exactly(split, consumed_batches):
    full = SampleLoader(split, SEQ, 3, seed=5)
    expected = [next(full) for _ in range(consumed_batches + 5)]
    first = SampleLoader(split, SEQ, 3, seed=5)
    for _ in range(consumed_batches):
        next(first)
    state = first.state_dict()
    assert state["consumed"] == 3 * consumed_batches and state["epoch"] == 3 * consumed_batches // 10
    resumed = SampleLoader(split, SEQ, 3, seed=5)
    resumed.load_state_dict(state)
    for want in expected[consumed_batches:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_resume_on_more_ranks_keeps_the_global_order(split):
    single = SampleLoader(split, SEQ, 4, seed=2)
    next(single)
    state = single.state_dict()
    expected = Counter(windows(next(single)))
    pair = [SampleLoader(split, SEQ, 2, seed=2, rank=r, world=2) for r in (0, 1)]
    for loader in pair:
        loader.load_state_dict(state)
    assert Counter(windows(next(pair[0])) + windows(next(pair[1]))) == expected


def test_refuses_a_state_from_other_data(split, tmp_path):
    other = make_split(tmp_path / "o", 81)
    loader = SampleLoader(other, SEQ, 2, seed=0)
    with pytest.raises(UserError, match="data.shards"):
        loader.load_state_dict(SampleLoader(split, SEQ, 2, seed=0).state_dict())


def test_split_shorter_than_one_window_is_a_user_error(tmp_path):
    short = make_split(tmp_path, SEQ)
    with pytest.raises(UserError, match="data.shards.*train.seq_len"):
        SampleLoader(short, SEQ, 1, seed=0)


def test_eval_batches_are_the_first_windows_in_order(split):
    batches = list(eval_batches(split, SEQ, micro_batch=3, max_batches=2))
    assert [windows(b) for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert [windows(b) for b in eval_batches(split, SEQ, 3, max_batches=100)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    ranks = [[windows(b) for b in eval_batches(split, SEQ, 2, max_batches=1, rank=r, world=2)] for r in (0, 1)]
    assert ranks == [[[0, 1]], [[2, 3]]]
