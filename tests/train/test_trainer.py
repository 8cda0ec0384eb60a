"""train/trainer.py on the debug preset and synthetic shards: learning, exact resume, refusals, run folder."""

import json
import math
import os

import pytest
import torch

from megalang.cli.artifacts import verify
from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.model.load import load_trained_model
from megalang.monitor.metrics import read_metrics
from megalang.store.manifest import lineage
from megalang.train.trainer import train

from .conftest import debug_config, make_shards, make_tokenizer, read_lines, train_capturing_weights


def losses(run, key="loss"):
    return {s: r[key] for s, r in read_metrics(run / "metrics.jsonl").items() if key in r}


def test_loss_goes_down_on_a_learnable_sequence(full_run):
    run, summary, _ = full_run
    assert summary["steps"] == 12 and summary["tokens_seen"] == 12 * 4 * 32
    assert summary["train_loss_last"] < 0.6 * summary["train_loss_first"]
    assert summary["train_loss_first"] == pytest.approx(math.log(64), rel=0.1)  # untrained: uniform over 64
    assert summary["val_loss"] < 0.6 * summary["train_loss_first"]


def test_metrics_every_step_with_val_loss_every_eval(full_run):
    run, summary, _ = full_run
    records = read_metrics(run / "metrics.jsonl")
    assert list(records) == list(range(1, 13))
    for r in records.values():
        assert {"loss", "lr", "grad_norm", "tokens", "tokens_per_s", "mfu", "step_time"} <= r.keys()
        assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1
    assert [s for s, r in records.items() if "val_loss" in r] == [4, 8, 12]
    assert records[12]["val_loss"] == summary["val_loss"]
    assert records[1]["lr"] == pytest.approx(3e-3 / 2)  # warmup step 1 of 2


def test_summary_fields(full_run):
    run, summary, _ = full_run
    assert json.loads((run / "summary.json").read_text()) == summary
    assert summary["trainable_params"] == summary["total_params"] > 0
    assert summary["tokens_per_s"] > 0 and 0 < summary["mfu"] < 1 and summary["peak_flops"] > 0
    assert summary["run_dir"] == str(run.resolve()) and summary["resumed_from_step"] is None


def test_run_folder_is_a_verifiable_self_contained_artifact(full_run, shards):
    run, _, _ = full_run
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints", "config.yaml", "manifest.json", "metrics.jsonl", "report.html", "report_files", "summary.json",
        "tokenizer"]  # report.*: written after the manifest, outside it (issue #8)
    assert load_config(RunConfig, run / "config.yaml") == debug_config(shards, run, train={"eval_every": 4})
    assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert verify(run) == []
    assert [n["stage"] for n in lineage(run)] == ["train", "data.tokenize", "tokenizer.train"]


def test_retention_keeps_the_newest_two(full_run):
    run, _, _ = full_run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-12", "step-8"]


def test_load_trained_model_returns_the_final_weights(full_run):
    run, _, weights = full_run
    model, cfg = load_trained_model(run)
    assert cfg.train.max_steps == 12 and not model.training
    state = model.state_dict()
    assert state.keys() == weights.keys()
    for k in weights:
        assert torch.equal(state[k], weights[k]), k


def test_resume_after_a_crash_is_bitwise_identical(full_run, resumed_run):
    run, _, weights = full_run
    resumed, summary, resumed_weights, interrupted = resumed_run
    assert summary["resumed_from_step"] == 4 and summary["steps"] == 12
    for k in weights:
        assert torch.equal(resumed_weights[k], weights[k]), k
    for key in ("loss", "grad_norm", "lr", "val_loss"):
        assert losses(resumed, key) == losses(run, key), key
    # Steps 5-6 ran twice (before the crash and after the resume): the file keeps both, the later wins.
    assert len(interrupted) == 6 and len(read_lines(resumed / "metrics.jsonl")) == 6 + 8
    assert summary["train_loss_first"] == losses(run)[1]


def test_resume_ignores_and_cleans_incomplete_checkpoints(resumed_run):
    run, _, _, _ = resumed_run
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-12", "step-8"]


def test_rerunning_a_finished_run_trains_nothing(resumed_run):
    run, _, weights, _ = resumed_run
    before = read_lines(run / "metrics.jsonl")
    summary, again = train_capturing_weights(load_config(RunConfig, run / "config.yaml"))
    assert summary["steps"] == 12 and summary["resumed_from_step"] == 12
    assert read_lines(run / "metrics.jsonl") == before
    assert all(torch.equal(again[k], weights[k]) for k in weights)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"train": {"seq_len": 16}}, "train.seq_len"),
        ({"train": {"micro_batch_size": 8}}, "train.global_batch_tokens"),
        ({"model": {"preset": "debug", "dropout": 0.1}}, "model.dropout"),
    ],
)
def test_resume_refuses_an_incompatible_config(full_run, shards, change, field):
    run, _, _ = full_run
    with pytest.raises(UserError, match=f"{field} changed since checkpoint"):
        train(debug_config(shards, run, **change))
    assert (run / "summary.json").is_file()  # refused before touching the run folder


def test_resume_refuses_another_tokenizer(full_run, tmp_path):
    run, _, _ = full_run
    other = make_shards(tmp_path / "shards", make_tokenizer(tmp_path / "tok", tag="b"), train_docs=40, val_docs=4)
    with pytest.raises(UserError, match="tokenizer"):
        train(debug_config(other, run))


def test_resume_never_refuses_an_existing_run(full_run, shards):
    run, _, _ = full_run
    with pytest.raises(UserError, match="checkpoint.resume=never"):
        train(debug_config(shards, run, checkpoint={"resume": "never"}))


def short_run(shards, tmp_path, name, **train_cfg):
    cfg = debug_config(shards, tmp_path / name, train={"max_steps": 2, **train_cfg}, checkpoint={"every": 0})
    return train_capturing_weights(cfg)


def test_gradient_accumulation_and_activation_checkpointing_match_the_plain_step(shards, tmp_path):
    plain, plain_w = short_run(shards, tmp_path, "plain")
    accum, accum_w = short_run(shards, tmp_path, "accum", micro_batch_size=2, global_batch_tokens=128)
    ac, ac_w = short_run(shards, tmp_path, "ac", activation_checkpointing=True)
    assert read_metrics(tmp_path / "accum" / "metrics.jsonl")[1]["tokens"] == 128
    for other, other_w in ((accum, accum_w), (ac, ac_w)):
        assert other["train_loss_last"] == pytest.approx(plain["train_loss_last"], rel=1e-5)
        for k in plain_w:
            assert torch.allclose(other_w[k], plain_w[k], atol=1e-5), k
    assert sorted(p.name for p in (tmp_path / "plain" / "checkpoints").iterdir()) == ["step-2"]


def test_compile_matches_the_eager_step_and_leaves_cpu_attention_eager(shards, tmp_path):
    from megalang.parallel.parallelize import apply_compile, decoder_blocks
    from megalang.torch_compat import is_compiled
    from megalang.train.trainer import setup

    plain, plain_w = short_run(shards, tmp_path, "eager")
    compiled, compiled_w = short_run(shards, tmp_path, "compiled", compile=True)
    assert compiled["train_loss_last"] == pytest.approx(plain["train_loss_last"], rel=1e-4)
    for k in plain_w:
        assert torch.allclose(compiled_w[k], plain_w[k], atol=1e-4), k
    t = setup(debug_config(shards, tmp_path / "parts", train={"max_steps": 1}))
    apply_compile(t.model, cpu=True)
    block = decoder_blocks(t.model)[0]
    assert is_compiled(block.mlp)
    assert not is_compiled(block.self_attn) and not is_compiled(block)
    t.sink.close()


def test_bf16_autocast_trains_on_cpu(shards, tmp_path):
    summary, _ = short_run(shards, tmp_path, "bf16", precision="bf16")
    assert summary["precision"] == "bf16" and math.isfinite(summary["train_loss_last"])
    assert summary["val_loss"] is not None


def test_deterministic_kernels_hold_for_the_run_and_give_the_default_runs_weights(shards, tmp_path, monkeypatch):
    """train.deterministic turns torch's deterministic mode on (cuBLAS workspace set) during the run only; on a
    CPU it changes no result, as the kernels megalang uses there are deterministic already."""
    from megalang.train import trainer

    seen = []
    original = trainer.train_step

    def spy(t, report):
        seen.append((torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        return original(t, report)

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(trainer, "train_step", spy)
    _, default_w = short_run(shards, tmp_path, "default")
    assert set(seen) == {(False, None)}
    seen.clear()
    _, det_w = short_run(shards, tmp_path, "deterministic", deterministic=True)
    assert set(seen) == {(True, ":4096:8")}
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert all(torch.equal(det_w[k], default_w[k]) for k in default_w)


EMULATED = "bf16 is emulated; train.precision=fp32 is faster here"


@pytest.mark.parametrize("native, precision, shown", [(False, "bf16", True), (True, "bf16", False), (False, "fp32", False)])
def test_one_line_at_setup_when_bf16_is_emulated_on_this_cpu(shards, tmp_path, monkeypatch, capsys, native, precision, shown):
    from megalang.monitor import flops

    monkeypatch.setattr(flops, "native_bf16", lambda device=None: native)
    short_run(shards, tmp_path, "run", precision=precision)
    assert capsys.readouterr().err.count(EMULATED) == (1 if shown else 0)  # once per run, not per step


@pytest.mark.parametrize(
    "sections, match",
    [
        ({"data": {"shards": None}}, "data.shards is not set"),
        ({"model": {"preset": "galactic"}}, "model.preset 'galactic'"),
        ({"train": {"precision": "fp16"}}, "train.precision=fp16 needs a CUDA device"),
        ({"train": {"global_batch_tokens": 200}}, "train.global_batch_tokens=200 is not a multiple"),
        ({"train": {"seq_len": 50_000}}, "data.shards.*train.seq_len"),
    ],
)
def test_user_errors_before_anything_is_written(shards, tmp_path, sections, match):
    with pytest.raises(UserError, match=match):
        train(debug_config(shards, tmp_path / "run", **sections))
    assert not (tmp_path / "run").exists()
