"""evaluate/scoring.py: prefix-shared, batched scoring (tree mask or KV cache) equals one plain forward pass per
(context, continuation), as lm-eval computes it."""

import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from megalang.evaluate.scoring import Scorer

from evalsets import ByteTokenizer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=24)
    return LlamaForCausalLM(cfg).eval()


def direct(model, ctx, cont, max_length):
    """lm-eval's computation: (ctx+cont) left-truncated to max_length+1, one forward, sum the cont log-probs."""
    seq = (ctx + cont)[-(max_length + 1):]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq[:-1]])).logits[0].double(), -1)
    tail = logp[-len(cont):]
    target = torch.tensor(cont)
    return tail.gather(1, target[:, None]).sum().item(), bool((tail.argmax(-1) == target).all())


@pytest.mark.parametrize("sharing, attn", [("tree", "sdpa"), ("tree", "eager"), ("cache", "sdpa")])
def test_shared_prefix_scores_equal_direct_forward(model, sharing, attn):
    model.config._attn_implementation = attn
    rng = random.Random(0)
    pairs = []
    for _ in range(9):
        ctx = [rng.randrange(3, 300) for _ in range(rng.randint(1, 14))]
        for _ in range(rng.randint(1, 4)):  # several continuations share each context
            pairs.append((ctx, [rng.randrange(3, 300) for _ in range(rng.randint(1, 5))]))
    pairs.append((list(range(3, 30)), [5, 6, 7]))  # longer than max_length: left-truncated like lm-eval
    scorer = Scorer(model, ByteTokenizer(), batch_size=3, sharing=sharing)
    got = scorer.loglikelihood_tokens(pairs)
    model.config._attn_implementation = "sdpa"
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        ref_ll, ref_greedy = direct(model, ctx, cont, 24)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


def test_greedy_flag_is_true_for_the_models_own_argmax(model):
    scorer = Scorer(model, ByteTokenizer(), batch_size=2)
    ctx = [10, 20, 30]
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx])).logits[0, -1].argmax())
        nxt2 = int(model(torch.tensor([ctx + [nxt]])).logits[0, -1].argmax())
    (_, greedy), (_, other) = scorer.loglikelihood_tokens([(ctx, [nxt, nxt2]), (ctx, [(nxt + 1) % 300, nxt2])])
    assert greedy is True and other is False


def test_rolling_loglikelihood_equals_sum_of_direct_windows(model):
    scorer = Scorer(model, ByteTokenizer(), batch_size=2)
    doc = [random.Random(1).randrange(3, 300) for _ in range(40)]
    windows = scorer.rolling_windows(doc, window=8)
    expect = sum(direct(model, c, p, 24)[0] for c, p in windows)
    assert scorer.loglikelihood_rolling([doc], window=8) == pytest.approx([expect], abs=1e-4)
    # a stride smaller than the window adds context but still predicts each token once
    windows = scorer.rolling_windows(doc, window=8, stride=4)
    assert [t for _, p in windows for t in p] == doc
    assert all(len(c) + len(p) >= 9 for c, p in windows[1:])
