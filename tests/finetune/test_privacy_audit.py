"""`megalang eval privacy` (evaluate/privacy.py) with data.canaries (data/canaries.py): a model fine-tuned without DP
on data with canaries repeated 20 times exposes them and leaks membership; the same run with DP-SGD at ε = 1 keeps
the canaries' exposure near the never-inserted controls'. Thresholds and the figures they were set from are in
docs/security.md ("Privacy audit")."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from megalang.cli import app
from megalang.config import CanaryConfig, RunConfig, load_config
from megalang.data.canaries import draw_secrets
from megalang.errors import UserError
from megalang.evaluate.privacy import CHANCE_EXPOSURE, evaluate_privacy, exposure
from megalang.store.run_dir import RunDir
from megalang.train.trainer import train

WORDS = "apple river stone cloud maple tiger ocean piano candle forest silver rocket lemon garden violet thunder".split()
CANDIDATES = 1000  # sampled from 10^6 six-digit secrets: exposure is measurable up to log2(1001) = 9.97 bits


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    """48 prompts with 4 random code words each; a quarter held out as val (the non-members)."""
    rng = random.Random(0)
    rows = [{"prompt": f"Record {i}: the code words?", "completion": " ".join(rng.choice(WORDS) for _ in range(4))}
            for i in range(48)]
    return write_jsonl(tmp_path_factory.mktemp("chats") / "chat.jsonl", rows)


def audit(tmp_path, pretrained, chats, *extra: str) -> dict:
    run = tmp_path / "run"
    train(load_config(RunConfig, None, [
        f"model.pretrained={pretrained}", f"data.sft={chats}", f"run.dir={run}", "train.seq_len=48",
        "train.micro_batch_size=8", "train.max_steps=100", "schedule.warmup_steps=0", "train.log_every=50",
        "checkpoint.every=0", "metrics.report=false", "train.progress=false", "data.packing=false",
        "optimizer.lr=1e-2", "schedule.min_lr=1e-3", "optimizer.weight_decay=0", "data.sft_val_fraction=0.25",
        "lora.rank=8", "lora.dropout=0", "data.canaries.count=4", "data.canaries.repeats=20",
        "data.canaries.digits=6", *extra]))
    result = evaluate_privacy(str(run), candidates=CANDIDATES, members=100)
    assert json.loads(RunDir(run).privacy.read_text()) == result
    return result


@pytest.mark.slow
def test_canaries_exposed_without_dp_and_near_chance_with_dp(tiny_pretrained, chats, tmp_path):
    plain = audit(tmp_path / "plain", tiny_pretrained, chats)
    assert plain["dp"] is False and plain["epsilon"] is None
    assert plain["candidate_space"] == 10**6 and plain["exposure_method"] == "sampled" and plain["repeats"] == 20
    assert len(plain["canaries"]) == 4 and len(plain["controls"]) == 4
    assert plain["exposure_mean"] > 7.0  # measured 8.82 of at most 9.97; controls 0.82
    assert plain["control_exposure_mean"] < 3.0
    assert plain["mia_auc"] > 0.7  # measured 0.85 (33 members, 15 held out)
    assert plain["mia_members"] == 33 and plain["mia_nonmembers"] == 15  # the 80 canary rows are not members

    private = audit(tmp_path / "dp", tiny_pretrained, chats, "privacy.target_epsilon=1.0", "privacy.delta=1e-3")
    assert private["dp"] is True and 0 < private["epsilon"] <= 1.01 and private["delta"] == 1e-3
    assert private["exposure_mean"] < 3.5  # measured 2.09; chance is 1/ln 2 = 1.44 bits
    assert private["exposure_mean"] < plain["exposure_mean"] - 4
    assert private["mia_auc"] < 0.7  # measured 0.35


def test_canaries_go_to_train_only_and_are_recorded(tiny_pretrained, chats, tmp_path):
    """The canary chats are the last documents of the train split, never val; canaries.json names them."""
    from megalang.data.sft import read_sft_examples
    from megalang.train.finetune import prepare_data

    cfg = load_config(RunConfig, None, [f"model.pretrained={tiny_pretrained}", f"data.sft={chats}",
                                         f"run.dir={tmp_path / 'run'}", "data.sft_val_fraction=0.25",
                                         "data.canaries.count=3", "data.canaries.repeats=5"])
    shards, manifest = prepare_data(cfg)
    record = json.loads(RunDir(tmp_path / "run").canaries.read_text())
    assert record["candidate_space"] == 10**6 and len(record["canaries"]) == 3 and record["repeats"] == 5
    assert manifest["counts"]["train_only_documents"] == 15 and manifest["counts"]["val_documents"] == 15
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_pretrained)
    train_texts = [tok.decode(ids) for ids, _ in read_sft_examples(shards, manifest, "train")]
    val_texts = [tok.decode(ids) for ids, _ in read_sft_examples(shards, manifest, "val")]
    for secret in record["canaries"]:
        assert sum(secret in t for t in train_texts[-15:]) == 5 and not any(secret in t for t in val_texts)
    assert not any(s in t for s in record["controls"] for t in train_texts + val_texts)


def test_secrets_and_exposure_arithmetic():
    canaries, controls = draw_secrets(CanaryConfig(count=5, digits=9, seed=3))
    assert len(set(canaries + controls)) == 10 and all(len(s) == 9 and s.isdigit() for s in canaries + controls)
    assert draw_secrets(CanaryConfig(count=5, digits=9, seed=3)) == (canaries, controls)
    others = np.arange(1, 1024, dtype=float)  # 1023 other candidates, losses 1..1023
    assert exposure(0.5, others) == pytest.approx(10.0)  # ranked first of 1024: log2(1024) − log2(1)
    assert exposure(2000.0, others) == pytest.approx(0.0)  # ranked last
    rng = np.random.default_rng(0)
    sampled = [exposure(rng.random(), rng.random(999)) for _ in range(4000)]
    assert np.mean(sampled) == pytest.approx(CHANCE_EXPOSURE, abs=0.1)  # a never-inserted secret: ~1.44 bits


def test_run_without_canaries_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("{}")
    with pytest.raises(UserError, match="trained without canaries"):
        evaluate_privacy(str(run))
    result = CliRunner().invoke(app, ["eval", "privacy", "--run", str(run)])
    assert result.exit_code == 2 and "trained without canaries" in result.output
    missing = CliRunner().invoke(app, ["eval", "privacy", "--run", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_canaries_need_sft_data(tmp_path):
    from megalang.train.finetune import prepare_data

    cfg = load_config(RunConfig, None, [f"data.shards={tmp_path}", "data.canaries.count=2"])
    with pytest.raises(UserError, match="data.canaries .* data.sft"):
        prepare_data(cfg)


def test_report_shows_epsilon_beside_exposure_and_auc():
    from megalang.monitor.report import privacy_rows

    rows = dict(privacy_rows({"epsilon": 0.99, "delta": 1e-3, "exposure_mean": 2.09, "control_exposure_mean": 0.83,
                              "max_exposure": 9.97, "repeats": 20, "mia_auc": 0.35, "mia_tpr_at_1pct_fpr": 0.0}))
    assert rows["privacy: ε (δ)"] == "0.99 (δ = 0.001)"
    assert rows["privacy: canary exposure, mean (controls)"].startswith("2.09 bits (0.83)")
    assert rows["privacy: membership inference AUC (TPR at 1% FPR)"] == "0.350 (0.000)"
    assert privacy_rows({}) == []
