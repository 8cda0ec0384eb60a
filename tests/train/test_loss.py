"""Chunked linear + cross-entropy (train/loss.py) against the plain logits + F.cross_entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from megalang.train.loss import IGNORE, fusable, linear_cross_entropy, lm_loss


def reference(hidden, weight, labels):
    return F.cross_entropy((hidden @ weight.T).float(), labels, ignore_index=IGNORE)


def grads_of(fn, hidden, weight, labels):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = fn(h, w, labels)
    (loss * 3.0).backward()  # a non-unit upstream gradient must scale both results
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("rows", [7, 16, 64, 1000])  # uneven last chunk, exact chunks, one chunk bigger than N
def test_fp32_matches_plain_cross_entropy(rows):
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(50, 24, generator=g), torch.randn(97, 24, generator=g)
    labels = torch.randint(0, 97, (50,), generator=g)
    labels[[0, 13, 49]] = IGNORE
    ours = grads_of(lambda h, w, y: linear_cross_entropy(h, w, y, rows=rows), hidden, weight, labels)
    ref = grads_of(reference, hidden, weight, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_all_labels_ignored_gives_zero_loss_and_zero_gradients():
    hidden, weight = torch.randn(8, 16), torch.randn(32, 16)
    labels = torch.full((8,), IGNORE)
    loss, grad_h, grad_w = grads_of(lambda h, w, y: linear_cross_entropy(h, w, y, rows=3), hidden, weight, labels)
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad_h) == 0 and torch.count_nonzero(grad_w) == 0


@pytest.mark.parametrize("bad", [-5, 20])
def test_labels_outside_the_vocabulary_fail_like_cross_entropy(bad):
    hidden, weight, labels = torch.randn(6, 8), torch.randn(20, 8), torch.randint(0, 20, (6,))
    labels[2] = bad
    with pytest.raises((RuntimeError, IndexError)):
        reference(hidden, weight, labels)
    with pytest.raises((RuntimeError, IndexError)):
        linear_cross_entropy(hidden, weight, labels, rows=4)


def test_no_grad_returns_the_loss_only():
    hidden, weight, labels = torch.randn(10, 8), torch.randn(20, 8), torch.randint(0, 20, (10,))
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, labels, rows=4)
    torch.testing.assert_close(loss, reference(hidden, weight, labels))


@pytest.mark.parametrize("dtype, tokens, vocab, rows, tolerance", [
    (torch.bfloat16, 64, 200, 16, 2e-2),
    # softmax / tokens is ~1e-7 here, below fp16's normal range: the 1/tokens scale must come after the matmuls.
    (torch.float16, 2048, 4096, 512, 1e-2),
])
def test_autocast_gradients_are_as_close_as_the_dtype_allows(dtype, tokens, vocab, rows, tolerance):
    g = torch.Generator().manual_seed(1)
    hidden, weight = torch.randn(tokens, 16, generator=g), torch.randn(vocab, 16, generator=g) * 0.05
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    with torch.autocast("cpu", dtype=dtype):
        ours = grads_of(lambda h, w, y: linear_cross_entropy(h, w, y, rows=rows), hidden, weight, labels)
    ref = grads_of(reference, hidden, weight, labels)  # fp32
    assert ours[1].dtype == torch.float32 and ours[2].dtype == torch.float32  # gradients in the inputs' dtype
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-2, atol=1e-2)
    for a, b in zip(ours[1:], ref[1:]):
        assert (a - b).abs().max() <= tolerance * b.abs().max()


def tiny_llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))


@pytest.mark.parametrize("tied", [False, True])
def test_lm_loss_matches_the_model_logits_loss_and_restores_the_head(tied):
    ids = torch.randint(0, 96, (3, 17), generator=torch.Generator().manual_seed(2))
    inputs, labels = ids[:, :-1], ids[:, 1:].clone()
    labels[1, :5] = IGNORE
    results = []
    for fused in (False, True):
        model = tiny_llama(tied)
        if fused:
            loss = lm_loss(model, labels, input_ids=inputs)
        else:
            loss = F.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        assert model(input_ids=inputs).logits.shape == (3, 16, 96)  # the head is a plain Linear again afterwards
    (plain_loss, plain), (fused_loss, fused_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss)
    for name in plain:
        torch.testing.assert_close(fused_grads[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_hooked_or_biased_heads_fall_back_to_plain_logits():
    model = tiny_llama(False)
    assert fusable(model.lm_head)
    handle = model.lm_head.register_forward_hook(lambda module, args, out: None)  # e.g. Opacus' per-sample hooks
    assert not fusable(model.lm_head)
    ids = torch.randint(0, 96, (2, 9))
    seen = []
    handle.remove()
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    loss = lm_loss(model, ids[:, 1:], input_ids=ids[:, :-1])
    assert seen == [(2, 8, 96)]  # the hook saw real logits, not a loss
    torch.testing.assert_close(loss, F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten()))
    assert not fusable(torch.nn.Linear(4, 4, bias=True))


def head_flops(grad: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    hidden, weight = torch.randn(40, 16, requires_grad=True), torch.randn(64, 16, requires_grad=True)
    labels = torch.randint(0, 64, (40,))
    with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(grad):
        linear_cross_entropy(hidden, weight, labels, rows=16)
    return counter.get_total_flops()


def test_no_grad_computes_no_gradients():
    """Evaluation runs under no_grad, where the two gradient matmuls would triple the head's work."""
    forward = 2 * 40 * 16 * 64
    assert head_flops(grad=False) == forward
    assert head_flops(grad=True) == 3 * forward


def test_sum_reduction_matches_cross_entropy_sum():
    g = torch.Generator().manual_seed(3)
    hidden, weight = torch.randn(30, 12, generator=g), torch.randn(50, 12, generator=g)
    labels = torch.randint(0, 50, (30,), generator=g)
    labels[[2, 7]] = IGNORE
    ours = grads_of(lambda h, w, y: linear_cross_entropy(h, w, y, rows=8, reduction="sum"), hidden, weight, labels)
    ref = grads_of(lambda h, w, y: F.cross_entropy(h @ w.T, y, ignore_index=IGNORE, reduction="sum"),
                   hidden, weight, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        linear_cross_entropy(hidden, weight, labels, reduction="none")


def test_models_that_post_process_logits_get_the_plain_loss():
    """Gemma 2 soft-caps its logits after the output layer; with the loss in their place it would soft-cap the
    loss. Only architectures known to return the layer's output unchanged are fused."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                           final_logit_softcapping=0.5))
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(4))
    plain = F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(lm_loss(model, ids[:, 1:], input_ids=ids[:, :-1]), plain)


def test_lora_wrapped_llama_still_takes_the_chunked_loss(monkeypatch):
    from peft import LoraConfig, get_peft_model

    from megalang.train import loss as loss_module

    calls = []
    real = loss_module.linear_cross_entropy
    monkeypatch.setattr(loss_module, "linear_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = get_peft_model(tiny_llama(False), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    ids = torch.randint(0, 96, (2, 9))
    loss = lm_loss(model, ids[:, 1:], input_ids=ids[:, :-1])
    assert calls == [1]
    torch.testing.assert_close(loss, F.cross_entropy(model(input_ids=ids[:, :-1]).logits.flatten(0, 1),
                                                     ids[:, 1:].flatten()))
