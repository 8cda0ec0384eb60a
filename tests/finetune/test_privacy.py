"""DP-SGD through Opacus (train/privacy.py): the reported ε is Opacus's accountant's for the same parameters,
per-example clipping is active, and settings DP cannot honour are refused."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PLANTED, QUESTIONS, write_jsonl

from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.train.trainer import train

STEPS, BATCH = 4, 2


def dp_config(tmp_path, pretrained, chats, *extra: str) -> RunConfig:
    return load_config(RunConfig, None, [
        f"model.pretrained={pretrained}", f"data.sft={chats}", f"run.dir={tmp_path / 'run'}", "train.seq_len=64",
        f"train.micro_batch_size={BATCH}", f"train.max_steps={STEPS}", "schedule.warmup_steps=0", "train.log_every=1",
        "checkpoint.every=0", "metrics.report=false", "train.progress=false", "lora.rank=4", "data.packing=false",
        "privacy.target_epsilon=8.0", "privacy.delta=0.01", "privacy.max_grad_norm=0.5", *extra,
    ])


@pytest.fixture
def many_chats(tmp_path):
    rows = [{"prompt": f"{q} ({i})", "completion": PLANTED} for i in range(3) for q in QUESTIONS]  # 18 examples
    return write_jsonl(tmp_path / "chat.jsonl", rows)


@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
def test_reported_epsilon_is_opacus_accountant(lora_rank, tiny_pretrained, many_chats, tmp_path):
    """LoRA (the practical case) and a full fine-tune of a small model (every parameter, tied embedding included)."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    summary = train(dp_config(tmp_path, tiny_pretrained, many_chats, f"lora.rank={lora_rank}"))
    assert (summary["trainable_params"] == summary["total_params"]) == (lora_rank == 0)
    examples = summary["sft"]["examples"]
    sample_rate = BATCH / examples
    noise = get_noise_multiplier(target_epsilon=8.0, target_delta=0.01, sample_rate=sample_rate, steps=STEPS,
                                 accountant="rdp")
    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, STEPS)]
    expected = round(accountant.get_epsilon(delta=0.01), 2)
    assert summary["privacy"]["noise_multiplier"] == pytest.approx(noise)
    assert summary["epsilon"] == expected and 0 < expected <= 8.0 + 0.1
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["epsilon"] == expected and lines[0]["epsilon"] < expected  # ε grows with the steps taken


@pytest.mark.parametrize("lora_rank", [4, 0], ids=["lora", "full"])
def test_per_example_clipping_is_active(lora_rank, tiny_pretrained):
    """With per-example gradients far above max_grad_norm, the summed clipped gradient is at most batch × C.
    Full fine-tune: every parameter gets per-example gradients (RMSNorm through Opacus's functorch fallback,
    the tied embedding summed over its two uses)."""
    from transformers import AutoModelForCausalLM

    from megalang.model.lora import apply_lora
    from megalang.train.optim import build_optimizer
    from megalang.train.privacy import make_private

    cfg = RunConfig.model_validate({"lora": {"rank": lora_rank}, "privacy": {"target_epsilon": 8.0, "delta": 1e-4,
                                                                              "max_grad_norm": 0.01}})
    model = AutoModelForCausalLM.from_pretrained(tiny_pretrained, dtype=torch.float32).train()
    model = apply_lora(model, cfg.lora) if lora_rank else model
    optimizer, state = make_private(model, build_optimizer(model, cfg.optimizer), cfg, num_examples=1000,
                                    batch_size=4, steps=10)
    ids = torch.randint(0, 1000, (4, 16))
    (model(input_ids=ids, labels=ids).loss * 1000).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    raw = [p.grad_sample.flatten(1).norm(dim=1) for p in params]
    per_example = torch.stack(raw).pow(2).sum(0).sqrt()
    assert (per_example > 1.0).all()  # every example's gradient is 100× the clipping norm
    if not lora_rank:
        assert len(params) == len(list(model.parameters()))  # nothing frozen, nothing without per-example grads
        tied = model.get_input_embeddings().weight
        assert tied is model.get_output_embeddings().weight
        torch.testing.assert_close(tied.grad_sample.mean(0), tied.grad, rtol=1e-3, atol=1e-4)
    optimizer.clip_and_accumulate()
    summed = torch.cat([p.summed_grad.flatten() for p in params]).norm()
    assert summed <= 4 * 0.01 * (1 + 1e-4)


def test_dp_refuses_packing(tiny_pretrained, many_chats, tmp_path):
    with pytest.raises(UserError, match="data.packing=true puts several examples"):
        train(dp_config(tmp_path, tiny_pretrained, many_chats, "data.packing=true"))
    assert not (tmp_path / "run" / "checkpoints").exists()
