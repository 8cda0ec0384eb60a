"""data/dedup.py and the dedup steps of `prepare`: planted exact and near duplicates across files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from megalang.config import PrepareConfig
from megalang.data.dedup import (
    MinHasher,
    MinHashParams,
    Signatures,
    clusters,
    estimated_jaccard,
    near_duplicate_mask,
)
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare

VOCAB = [f"w{i:05d}" for i in range(20_000)]


def shingle_set(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return set(zip(*[words[i:] for i in range(n)]))


def jaccard(a: str, b: str) -> float:
    x, y = shingle_set(a), shingle_set(b)
    return len(x & y) / len(x | y)


def mutate(rng: random.Random, text: str, k: int) -> str:
    """Replace k words at positions at least 5 apart, so each replacement breaks 5 distinct shingles."""
    words = text.split()
    for pos in rng.sample(range(4, len(words) - 4, 6), k):
        words[pos] = rng.choice(VOCAB)
    return " ".join(words)


@pytest.fixture(scope="module")
def planted():
    """200 originals; 100 near copies with Jaccard in [0.8, 1), 100 far copies with Jaccard in [0.3, 0.5), 20 exact."""
    rng = random.Random(5)
    originals = [" ".join(rng.choices(VOCAB, k=200)) for _ in range(200)]
    near = [mutate(rng, originals[i], rng.randint(1, 4)) for i in range(100)]
    far = [mutate(rng, originals[i], rng.randint(14, 20)) for i in range(100, 200)]
    assert all(0.8 <= jaccard(originals[i], near[i]) < 1 for i in range(100))
    assert all(0.3 <= jaccard(originals[100 + i], far[i]) < 0.5 for i in range(100))
    return originals, near, far


def test_signatures_estimate_jaccard():
    hasher = MinHasher()
    rng = random.Random(1)
    a = " ".join(rng.choices(VOCAB, k=400))
    b = mutate(rng, a, 8)
    est = estimated_jaccard(hasher.signature(a)[None], hasher.signature(b)[None])[0]
    assert abs(est - jaccard(a, b)) < 0.12
    assert hasher.signature("") is None
    assert (hasher.signature("Only three words") == MinHasher().signature("only three WORDS")).all()  # deterministic


def test_clusters_keep_the_first_document_and_merge_across_transitive_pairs():
    rng = random.Random(2)
    a = " ".join(rng.choices(VOCAB, k=300))
    b, c = mutate(rng, a, 2), " ".join(rng.choices(VOCAB, k=300))
    hasher = MinHasher()
    sigs = np.stack([hasher.signature(t) for t in (c, a, b, a)])
    removed, survivor = near_duplicate_mask(Signatures([sigs[:2], sigs[2:]], np.ones(4, bool)), MinHashParams())
    assert removed.tolist() == [False, False, True, True]
    assert survivor.tolist() == [0, 1, 1, 1]


@pytest.mark.parametrize("seed", range(5))
def test_clusters_are_the_connected_components_rooted_at_their_smallest_index(seed):
    """Against a plain graph search, on random sparse graphs with long chains (edges in shuffled order)."""
    rng = np.random.default_rng(seed)
    n = 2000
    chain = rng.permutation(n)[:300]  # one long path through random nodes: many hook-and-compress rounds
    edges = np.concatenate([rng.integers(0, n, size=(800, 2)), np.stack([chain[:-1], chain[1:]], axis=1)])
    edges = edges[rng.permutation(len(edges))]
    neighbours = [[] for _ in range(n)]
    for a, b in edges.tolist():
        neighbours[a].append(b)
        neighbours[b].append(a)
    expected = np.full(n, -1)
    for start in range(n):  # ascending: the first unvisited node of a component is its smallest
        if expected[start] >= 0:
            continue
        stack, expected[start] = [start], start
        while stack:
            for m in neighbours[stack.pop()]:
                if expected[m] < 0:
                    expected[m] = start
                    stack.append(m)
    removed, survivor = clusters(n, edges)
    assert np.array_equal(survivor, expected)
    assert np.array_equal(removed, expected != np.arange(n))
    assert clusters(3, np.empty((0, 2), np.int64))[1].tolist() == [0, 1, 2]


def test_prepare_near_dedup_recall_and_precision_across_files(tmp_path, planted):
    originals, near, far = planted
    (tmp_path / "in").mkdir()
    rows = {"a.jsonl": originals, "b.jsonl": near + far + originals[:20]}  # 20 exact copies in another file
    for name, texts in rows.items():
        (tmp_path / "in" / name).write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    manifest = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), workers=1,
                                     steps=["normalize", "length", "exact_dedup", "near_dedup"]))
    kept = {r["text"] for r in iter_prepared(tmp_path / "out")}
    counts = manifest["counts"]
    assert counts["removed_exact_dedup"] == 20
    recall = sum(t not in kept for t in near) / len(near)
    assert recall >= 0.95
    assert all(t in kept for t in far), "pairs below Jaccard 0.5 must never be merged"
    assert all(t in kept for t in originals), "the first document of every cluster survives"
    assert counts["removed_near_dedup"] == len(near) - sum(t in kept for t in near)
    samples = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "near_dedup.jsonl").read_text().splitlines()]
    assert samples and all(s["reason"] == "near_duplicate" and len(s["duplicate_of"]) == 16 for s in samples)
    assert counts["steps"]["near_dedup"]["reasons"]["near_duplicate"][0] == counts["removed_near_dedup"]
