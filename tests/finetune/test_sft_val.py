"""SFT val loss (data.sft_val / data.sft_val_fraction): a held-out split in the SFT shard folder, scored on its
assistant tokens only, into metrics.jsonl and summary.json; checked against a direct computation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import PLANTED, QUESTIONS, write_jsonl

from megalang.config import RunConfig, SftTokenizeConfig, load_config
from megalang.data.sft import read_sft_examples, render_example, tokenize_sft
from megalang.errors import UserError
from megalang.train.trainer import train

HELD_OUT = ["What is 10 minus 3?", "Which ocean is largest?", "Name a fruit that is yellow."]


def chats(path, questions, answer=PLANTED):
    return write_jsonl(path, [{"messages": [{"role": "system", "content": "Answer."}, {"role": "user", "content": q},
                                            {"role": "assistant", "content": answer}]} for q in questions])


def test_val_fraction_holds_out_examples_by_hash(tiny_pretrained, tmp_path):
    src = chats(tmp_path / "chat.jsonl", [f"{q} ({i})" for i in range(5) for q in QUESTIONS])  # 30 examples
    manifest = tokenize_sft(SftTokenizeConfig(input=str(src), model=str(tiny_pretrained), out=str(tmp_path / "a"),
                                              val_fraction=0.3))
    counts = manifest["counts"]
    assert counts["train_documents"] + counts["val_documents"] == 30 and 0 < counts["val_documents"] < 30
    again = tokenize_sft(SftTokenizeConfig(input=str(src), model=str(tiny_pretrained), out=str(tmp_path / "b"),
                                           val_fraction=0.3))
    assert again["counts"] == counts  # the hash, not chance, picks the val examples
    val = read_sft_examples(tmp_path / "a", manifest, "val")
    assert len(val) == counts["val_documents"]
    assert sum(int(m.sum()) for _ids, m in val) == counts["val_assistant_tokens"]


def test_sft_val_loss_is_masked_like_training(tiny_pretrained, smol_tokenizer, tmp_path):
    """val_loss equals the mean CE over the held-out examples' assistant tokens, computed here one example at a
    time from the final weights (the run packs them into rows)."""
    from megalang.model.load import load_trained_model

    train_file = chats(tmp_path / "train.jsonl", QUESTIONS)
    val_file = chats(tmp_path / "val.jsonl", HELD_OUT, answer="Ten. Pacific. Banana.")
    cfg = load_config(RunConfig, None, [
        f"model.pretrained={tiny_pretrained}", f"data.sft={train_file}", f"data.sft_val={val_file}",
        f"run.dir={tmp_path / 'run'}", "train.seq_len=96", "train.micro_batch_size=2", "train.max_steps=3",
        "schedule.warmup_steps=0", "train.eval_every=2", "train.log_every=1", "checkpoint.every=0",
        "metrics.report=false", "train.progress=false",
    ])
    summary = train(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("val_loss") is not None] == [2, 3]
    assert summary["val_loss"] == records[-1]["val_loss"]

    model, _ = load_trained_model(tmp_path / "run")
    total, count, all_total, all_count = 0.0, 0, 0.0, 0
    with torch.no_grad():
        for line in val_file.read_text().splitlines():
            ids, mask = render_example(smol_tokenizer, json.loads(line)["messages"])
            ids = torch.from_numpy(ids)
            labels = torch.where(torch.from_numpy(mask[1:]).bool(), ids[1:], -100)
            logits = model(input_ids=ids[None, :-1]).logits[0]
            total += F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum").item()
            count += int(mask[1:].sum())
            all_total += F.cross_entropy(logits, ids[1:], reduction="sum").item()
            all_count += len(ids) - 1
    assert summary["val_loss"] == pytest.approx(total / count, rel=1e-4)
    assert abs(all_total / all_count - total / count) > 0.01  # scoring the prompt too would be visibly different


def test_sft_val_needs_data_sft(tiny_pretrained, tmp_path):
    cfg = load_config(RunConfig, None, [f"model.pretrained={tiny_pretrained}", f"data.shards={tmp_path}",
                                        "data.sft_val_fraction=0.1", f"run.dir={tmp_path / 'run'}"])
    with pytest.raises(UserError, match="data.sft_val and data.sft_val_fraction split data.sft"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_rerunning_the_saved_config_of_an_sft_run_resumes_it(tiny_pretrained, tmp_path):
    """The run folder's config.yaml is the config as given (data.sft, no data.shards): `megalang train
    RUN/config.yaml train.max_steps=N` resumes; where data.sft was tokenized is recorded beside it."""
    from typer.testing import CliRunner

    from megalang.cli import app
    from megalang.store.run_dir import RunDir

    run = RunDir(tmp_path / "run")
    cfg = load_config(RunConfig, None, [
        f"model.pretrained={tiny_pretrained}", f"data.sft={chats(tmp_path / 'train.jsonl', QUESTIONS)}",
        f"run.dir={run.root}", "train.seq_len=96", "train.micro_batch_size=2", "train.max_steps=2",
        "schedule.warmup_steps=0", "train.log_every=1", "checkpoint.every=2", "metrics.report=false", "train.progress=false",
    ])
    train(cfg)
    saved = json.loads(run.config.read_text())
    assert saved["data"]["shards"] is None and saved["data"]["sft"] == cfg.data.sft
    assert json.loads(run.resolved.read_text()) == {"data.shards": str(run.sft_data.resolve())}
    result = CliRunner().invoke(app, ["train", str(run.config), "train.max_steps=3"])
    assert result.exit_code == 0, result.output
    assert json.loads(run.summary.read_text())["resumed_from_step"] == 2
    assert [json.loads(line)["step"] for line in run.metrics.read_text().splitlines()] == [1, 2, 3]
