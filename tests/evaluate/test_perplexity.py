"""evaluate/perplexity.py: the windowed NLL equals a direct per-window computation and covers every token."""

import math

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from megalang.data.shards import ShardWriter, open_split
from megalang.evaluate.perplexity import evaluate_perplexity


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def make_split(tmp_path, docs, tokens_per_shard=1 << 20):
    w = ShardWriter(tmp_path, "val", np.dtype(np.uint16), tokens_per_shard)
    for d in docs:
        w.add(np.asarray(d))
    info = w.close()
    manifest = {"dtype": "uint16", "splits": {"val": info}}
    return open_split(tmp_path, "val", manifest)


def direct_nll(model, tokens, seq_len):
    total, count = 0.0, 0
    for s in range(0, len(tokens) - 1, seq_len):
        w = torch.tensor(tokens[s : s + seq_len + 1])[None]
        logits = model(input_ids=w[:, :-1]).logits
        total += torch.nn.functional.cross_entropy(logits[0], w[0, 1:], reduction="sum").item()
        count += w.size(1) - 1
    return total / count, count


def test_matches_direct_computation_across_shards_and_a_short_tail(tmp_path, model):
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 50, n).tolist() for n in (30, 17, 41)]
    split = make_split(tmp_path, docs, tokens_per_shard=20)  # forces several .bin files
    assert len(split.bins) > 1
    flat = [t for d in docs for t in d]
    with torch.no_grad():
        expect, count = direct_nll(model, flat, 16)
    got = evaluate_perplexity(model, split, seq_len=16, batch_size=3)
    assert got["tokens"] == len(flat) - 1 == count
    assert got["loss"] == pytest.approx(expect, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(expect), rel=1e-5)


def test_max_batches_limits_the_windows(tmp_path, model):
    split = make_split(tmp_path, [list(range(50)) * 4])
    got = evaluate_perplexity(model, split, seq_len=10, batch_size=2, max_batches=1)
    assert got["tokens"] == 20
