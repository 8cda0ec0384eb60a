"""Config compatibility on resume (docs/reliability.md, promise 4): refused changes name the key and exit 2;
benign ones resume, take effect, and are printed and recorded in RUN/resumes.jsonl."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from megalang.cli import app
from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.store.run_dir import RunDir
from megalang.train import resume_compat as compat
from megalang.train.optim import lr_factor
from megalang.train.setup import resolved_run_config

from .conftest import debug_config, train_capturing_weights

MANIFEST = {"vocab_size": 64, "tokenizer_sha256": "t" * 64, "tokenizer_path": "/tok",
            "files": {"train-00000.bin": {"size": 8, "sha256": "a" * 64}}}


def run_config(overrides: dict | None = None, manifest: dict = MANIFEST) -> dict:
    data = {"model": {"preset": "debug"}, "data": {"shards": "/shards"}, "train": {"seq_len": 32, "micro_batch_size": 4}}
    for key, value in (overrides or {}).items():
        section, _, name = key.partition(".")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return resolved_run_config(RunConfig.model_validate(data), manifest, 1, 1)


def test_every_config_key_is_classified():
    """A new config field must be put on one of compat's lists (unclassified keys are refused on resume)."""
    keys = compat.run_config_keys(run_config())
    assert "derived.shards_content_sha256" in keys and "health.nonfinite" in keys
    assert [k for k in keys if compat.classify(k) == "unknown"] == []


@pytest.mark.parametrize(
    "change, name",
    [
        ({"train.seq_len": 64}, "train.seq_len"),
        ({"train.micro_batch_size": 8}, "train.global_batch_tokens"),
        ({"model.preset": "tiny"}, "model.preset"),
        ({"model.pretrained": "/other/model"}, "model.pretrained"),
        ({"seed": 1}, "seed"),
        ({"loss.objective": "distill"}, "loss.objective"),
        ({"lora.rank": 8}, "lora.rank"),
        ({"lora.targets": ["q_proj"]}, "lora.targets"),
        ({"privacy.target_epsilon": 8.0}, "privacy.target_epsilon"),
        ({"data.curriculum": False}, "data.curriculum"),
        ({"train.optimizer": "muon"}, "train.optimizer"),
    ],
)
def test_refused_changes_name_the_key(change, name):
    with pytest.raises(UserError, match=rf"^{name} changed since checkpoint /ck \("):
        compat.check_resume_compatible("/ck", run_config(), run_config(change))


def test_other_tokens_or_tokenizer_are_refused_a_moved_copy_is_not():
    other_tokens = {**MANIFEST, "files": {"train-00000.bin": {"size": 8, "sha256": "b" * 64}}}
    with pytest.raises(UserError, match=r"^data.shards content changed"):
        compat.check_resume_compatible("/ck", run_config(), run_config(manifest=other_tokens))
    with pytest.raises(UserError, match=r"^tokenizer changed .*also changed: tokenizer vocabulary size"):
        compat.check_resume_compatible("/ck", run_config(), run_config(manifest={**MANIFEST, "vocab_size": 80,
                                                                                "tokenizer_sha256": "u" * 64}))
    moved = compat.check_resume_compatible("/ck", run_config(), run_config({"data.shards": "/elsewhere"}))
    assert set(moved) == {"data.shards", "derived.shards"}


def test_keys_a_checkpoint_predates_are_logged_not_refused():
    saved = run_config()
    del saved["config"]["loss"]["objective"]  # as if written before loss.objective existed
    assert compat.check_resume_compatible("/ck", saved, run_config()) == {"loss.objective": (None, "ce")}


def test_a_refused_key_the_checkpoint_predates_is_refused_off_its_default():
    """A checkpoint older than train.optimizer holds AdamW's state: resuming it with muon is refused."""
    saved = run_config()
    del saved["config"]["train"]["optimizer"]
    assert compat.check_resume_compatible("/ck", saved, run_config()) == {"train.optimizer": (None, "adamw")}
    with pytest.raises(UserError, match=r"^train.optimizer changed since checkpoint /ck \(adamw → muon;"):
        compat.check_resume_compatible("/ck", saved, run_config({"train.optimizer": "muon"}))


@pytest.fixture(scope="module")
def four_steps(shards, tmp_path_factory):
    run = tmp_path_factory.mktemp("compat") / "run"
    train_capturing_weights(debug_config(shards, run, train={"max_steps": 4}, checkpoint={"every": 2}))
    return run


@pytest.mark.parametrize("override, name", [("train.seq_len=16", "train.seq_len"), ("seed=8", "seed")])
def test_refused_change_exits_2_naming_the_key(four_steps, shards, override, name):
    args = ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={four_steps}", "train.max_steps=4",
            "train.seq_len=32", "train.micro_batch_size=4", "optimizer.lr=3e-3", "schedule.min_lr=3e-4",
            "schedule.warmup_steps=2", "train.progress=false", "train.device=cpu", "checkpoint.every=2", "seed=7", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and f"{name} changed since checkpoint" in " ".join(result.output.split())


def test_benign_changes_resume_take_effect_and_are_logged(four_steps, shards, tmp_path, capfd):
    run = shutil.copytree(four_steps, tmp_path / "run")
    moved = shutil.copytree(shards, tmp_path / "moved-shards")  # the same tokens in another folder
    cfg = debug_config(moved, run, train={"max_steps": 6, "lr": 1e-3, "min_lr": 1e-4, "log_every": 2},
                       checkpoint={"every": 2, "keep": 3}, schedule={"shape": "wsd", "decay_fraction": 0.5})
    summary, _ = train_capturing_weights(cfg)
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 6
    record = json.loads(RunDir(run).resumes.read_text().splitlines()[-1])
    assert record["step"] == 4 and record["changes"]["train.max_steps"] == [4, 6]
    assert record["changes"]["optimizer.lr"] == [3e-3, 1e-3] and record["changes"]["checkpoint.keep"] == [2, 3]
    assert record["changes"]["data.shards"] == [str(shards), str(moved)]
    assert record["changes"]["schedule.shape"] == ["cosine", "wsd"]
    assert "resume from step 4: optimizer.lr 0.003 → 0.001" in capfd.readouterr().err
    metrics = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    assert metrics[6]["lr"] == pytest.approx(1e-3 * lr_factor(5, cfg), rel=1e-12)  # the new schedule


def test_a_checkpoint_saved_with_the_old_key_names_reads_under_the_new_ones():
    """Configs saved before keys were grouped by concern (train.lr, train.objective, …) compare key by key with
    today's: the same values are no change, another objective is still refused by its new name."""
    from megalang.config import MOVED_KEYS

    saved = run_config()
    for old, new in MOVED_KEYS.items():
        section, key = new.split(".")
        saved["config"]["train"][old.split(".")[1]] = saved["config"][section].pop(key)
    for section in ("optimizer", "schedule", "loss", "health"):
        del saved["config"][section]
    diff = compat.check_resume_compatible("/ck", saved, run_config())
    # every moved key matches under its new name; only keys added to those sections since (optimizer.muon_*)
    # differ, as additions the checkpoint predates
    assert not set(diff) & set(MOVED_KEYS.values()) and all(old is None for old, _ in diff.values())
    with pytest.raises(UserError, match="loss.objective changed"):
        compat.check_resume_compatible("/ck", saved, run_config({"loss.objective": "distill"}))
