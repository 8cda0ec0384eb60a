"""Distillation (train/objectives.py): a small student distilled from SmolLM2 ends closer to it (held-out KL)
than the same student trained with cross-entropy alone; the loss formula; a teacher with another vocabulary."""

from __future__ import annotations

import pytest
import torch
from conftest import PLANTED, QUESTIONS, write_jsonl

from megalang.config import DistillConfig, RunConfig, SftTokenizeConfig, load_config
from megalang.errors import UserError
from megalang.train.objectives import DistillObjective, cross_entropy, distill_kl
from megalang.train.trainer import train

HELD_OUT = ["Which ocean is the largest?", "What colour is grass?", "How many days are in a week?"]


def test_distill_loss_is_alpha_t2_kl_plus_ce():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[0, :2] = -100

    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.logits = logits

        def forward(self, **_):
            return type("Out", (), {"logits": self.logits + self.w})()

    objective = DistillObjective(Fixed(teacher), DistillConfig(alpha=0.3, temperature=2.0), torch.device("cpu"))
    loss = objective(Fixed(student), {"input_ids": labels, "labels": labels, "position_ids": labels})
    keep = labels.flatten() != -100
    p = torch.softmax(teacher.flatten(0, 1)[keep] / 2, -1)
    q = torch.log_softmax(student.flatten(0, 1)[keep] / 2, -1)
    kl = (p * (p.log() - q)).sum(-1).mean()
    torch.testing.assert_close(distill_kl(student, teacher, labels, 2.0), kl)
    torch.testing.assert_close(loss, 0.3 * 4 * kl + 0.7 * cross_entropy(student, labels))


@pytest.fixture(scope="module")
def sft_shards(tiny_pretrained, tmp_path_factory):
    from megalang.data.sft import tokenize_sft

    tmp = tmp_path_factory.mktemp("distill")
    rows = [{"prompt": q, "completion": PLANTED} for q in QUESTIONS]
    tokenize_sft(SftTokenizeConfig(input=str(write_jsonl(tmp / "chat.jsonl", rows)), model=str(tiny_pretrained),
                                   out=str(tmp / "shards")))
    return tmp / "shards"


def student_config(tmp_path, shards, name: str, *extra: str) -> RunConfig:
    return load_config(RunConfig, None, [
        "model.preset=debug", f"data.shards={shards}", f"run.dir={tmp_path / name}", "train.seq_len=64",
        "train.micro_batch_size=2", "train.max_steps=12", "optimizer.lr=3e-3", "schedule.min_lr=3e-4", "schedule.warmup_steps=1",
        "train.log_every=4", "checkpoint.every=0", "metrics.report=false", "train.progress=false", *extra,
    ])


def held_out_kl(student, teacher, tokenizer) -> float:
    """Mean KL(teacher‖student) at T=1 over the answer tokens of chats neither saw."""
    from megalang.data.sft import render_example

    total, count = 0.0, 0
    for q in HELD_OUT:
        ids, mask = render_example(tokenizer, [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}])
        x = torch.tensor([ids[:-1]])
        labels = torch.where(torch.tensor(mask[1:]).bool(), torch.tensor(ids[1:]), -100)[None]
        with torch.no_grad():
            kl = distill_kl(student(input_ids=x).logits, teacher(input_ids=x).logits, labels, 1.0)
        n = int((labels != -100).sum())
        total, count = total + kl.item() * n, count + n
    return total / count


def test_distilled_student_is_closer_to_the_teacher(smol_hf, smol_tokenizer, sft_shards, tmp_path):
    from transformers import AutoModelForCausalLM

    from megalang.model.load import load_trained_model

    train(student_config(tmp_path, sft_shards, "ce"))
    summary = train(student_config(tmp_path, sft_shards, "kd", "loss.objective=distill", f"distill.teacher={smol_hf}",
                                   "distill.alpha=0.9", "distill.temperature=1.0"))
    assert summary["train_loss_last"] < summary["train_loss_first"]
    teacher = AutoModelForCausalLM.from_pretrained(smol_hf, dtype=torch.float32).eval()
    kl_ce = held_out_kl(load_trained_model(tmp_path / "ce")[0], teacher, smol_tokenizer)
    kl_kd = held_out_kl(load_trained_model(tmp_path / "kd")[0], teacher, smol_tokenizer)
    assert kl_kd < kl_ce * 0.9, (kl_kd, kl_ce)


def test_teacher_with_another_vocabulary_is_refused(sft_shards, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.train_from_iterator(["a tiny corpus for another vocabulary"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "</s>"]))
    teacher_dir = tmp_path / "other-teacher"
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>").save_pretrained(teacher_dir)
    LlamaForCausalLM(LlamaConfig(vocab_size=raw.get_vocab_size(), hidden_size=16, intermediate_size=32,
                                 num_hidden_layers=1, num_attention_heads=2)).save_pretrained(teacher_dir)
    with pytest.raises(UserError, match=r"distill.teacher=.*other-teacher: its tokenizer differs"):
        train(student_config(tmp_path, sft_shards, "bad", "loss.objective=distill", f"distill.teacher={teacher_dir}"))
    assert not (tmp_path / "bad" / "checkpoints").exists()
