"""Data, tensor and pipeline parallel training on CPU ranks (gloo) give the single process's losses, and
checkpoints move between layouts (the moves tested here are listed in docs/scaling.md). Each launch takes ~10 s
(2 ranks) to ~25 s (4 ranks) on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dist.conftest import STEPS, assert_losses_match, copy_until, launch_train, metrics, train_here

pytestmark = [pytest.mark.dist, pytest.mark.timeout(900)]

ALL_STEPS = range(1, STEPS + 1)

LAYOUTS = {
    # name: (processes, data-parallel ranks, overrides)
    "tp2": (2, 1, ["parallel.tp=2"]),
    "pp2-gpipe": (2, 1, ["parallel.pp=2", "parallel.pp_schedule=gpipe"]),
    "pp2-1f1b": (2, 1, ["parallel.pp=2", "parallel.pp_schedule=1f1b"]),
    "fsdp2xtp2": (4, 2, ["parallel.dp_shard=2", "parallel.tp=2"]),
    # 4 data ranks: micro-batches of 2 keep the global batch of 8 samples
    "hsdp2x2": (4, 4, ["parallel.dp_replicate=2", "parallel.dp_shard=2", "train.micro_batch_size=2"]),
}


@pytest.fixture(scope="module")
def layout_run(dist_shards, tmp_path_factory):
    """name → the finished run of that layout (checkpoints at steps 4 and 8), launched once per module, so the
    loss test and the resume tests of a layout share it."""
    runs: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in runs:
            nproc, _, overrides = LAYOUTS[name]
            run = tmp_path_factory.mktemp(name) / "run"
            launch_train(nproc, dist_shards, run, *overrides)
            runs[name] = run
        return runs[name]

    return get


def test_fsdp2_losses_match_single_process(fsdp_run, single_run):
    run, reference = metrics(fsdp_run), metrics(single_run)
    assert sorted(run) == list(ALL_STEPS)
    assert_losses_match(run, reference, ALL_STEPS)
    # The gradient norm is reduced over the shards: it must be the whole model's, not one shard's.
    assert run[STEPS]["grad_norm"] == pytest.approx(reference[STEPS]["grad_norm"], rel=1e-4)
    derived = json.loads((fsdp_run / "checkpoints" / f"step-{STEPS}" / "run_config.json").read_text())["derived"]
    assert derived["parallel"] == {"pp": 1, "dp_replicate": 1, "dp_shard": 2, "tp": 1}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_losses_match_single_process(layout, layout_run, single_run):
    _, data_ranks, _ = LAYOUTS[layout]
    run_dir = layout_run(layout)
    run, reference = metrics(run_dir), metrics(single_run)
    assert sorted(run) == list(ALL_STEPS)
    assert_losses_match(run, reference, ALL_STEPS)
    assert run[STEPS]["grad_norm"] == pytest.approx(reference[STEPS]["grad_norm"], rel=1e-4)
    if data_ranks == 1:  # val loss then scores the single process's windows (eval_batches is per data rank)
        assert run[STEPS]["val_loss"] == pytest.approx(reference[STEPS]["val_loss"], rel=1e-4)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_params"] == json.loads((single_run / "summary.json").read_text())["total_params"]


def test_fsdp2_state_bytes_at_most_0_6_of_single_process(fsdp_run, single_run):
    """ZeRO-3: parameters, gradients and AdamW moments are each split over the 2 ranks (measured at the last
    logged step, gradients still held). 0.5 plus the uneven-split remainder."""
    sharded = metrics(fsdp_run)[STEPS]["state_bytes"]
    whole = metrics(single_run)[STEPS]["state_bytes"]
    assert whole > 0 and sharded / whole <= 0.6, (sharded, whole)
    assert metrics(fsdp_run)[STEPS]["peak_memory_bytes"] > 0


def test_fsdp2_checkpoint_resumes_on_one_process(fsdp_run, single_run, dist_shards, tmp_path):
    run = copy_until(fsdp_run, tmp_path / "run", 4)
    summary = train_here(dist_shards, run)
    assert summary["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_fsdp2_checkpoint_resumes_with_tp2(fsdp_run, single_run, dist_shards, tmp_path):
    run = copy_until(fsdp_run, tmp_path / "run", 4)
    launch_train(2, dist_shards, run, "parallel.tp=2")
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


@pytest.mark.parametrize("layout", ["fsdp2xtp2", "hsdp2x2"])
def test_2d_layout_checkpoint_resumes_on_one_process(layout, layout_run, single_run, dist_shards, tmp_path):
    """FSDP2 × TP (parameters are DTensors on a 2-D mesh) and HSDP (sharded within, replicated across groups)."""
    run = copy_until(layout_run(layout), tmp_path / "run", 4)
    assert train_here(dist_shards, run)["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_tp2_checkpoint_resumes_on_fsdp2(layout_run, single_run, dist_shards, tmp_path):
    run = copy_until(layout_run("tp2"), tmp_path / "run", 4)
    launch_train(2, dist_shards, run)
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_single_process_checkpoint_resumes_on_fsdp2(single_run, dist_shards, tmp_path):
    run = copy_until(single_run, tmp_path / "run", 4)
    launch_train(2, dist_shards, run)
    assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_ddp_async_save_checkpoints_complete_and_resume(dist_shards, single_run, tmp_path):
    """DDP (dp_replicate=2) with checkpoint.async_save from a writer process per rank (the two processes form a
    gloo group of their own): losses match one process, both checkpoints complete, and the step-4 one resumes
    on one process (with the writer thread)."""
    launch_train(2, dist_shards, tmp_path / "run", "parallel.dp_replicate=2", "parallel.dp_shard=1",
                 "checkpoint.async_save=true", "checkpoint.async_writer=process")
    assert_losses_match(metrics(tmp_path / "run"), metrics(single_run), ALL_STEPS)
    done = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert done == ["step-4", "step-8"]
    assert all((tmp_path / "run" / "checkpoints" / name / "COMPLETE.json").is_file() for name in done)
    run = copy_until(tmp_path / "run", tmp_path / "resumed", 4)
    assert train_here(dist_shards, run, "checkpoint.async_save=true",
                      "checkpoint.async_writer=thread")["resumed_from_step"] == 4
    assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_pipeline_checkpoint_resumes_with_pipeline_on_fsdp2_and_on_one_process(dist_shards, single_run, tmp_path):
    """Two stages hold different parameters in their optimizer's param group 0: the checkpoint keys them by
    parameter name (flattened), so neither stage overwrites the other's and every layout resumes. One val
    micro-batch is fewer than the pipeline's group of 2: it is rounded up to a group, not divided by zero."""
    launch_train(2, dist_shards, tmp_path / "run", "parallel.pp=2", "parallel.pp_schedule=1f1b",
                 "train.eval_batches=1")
    assert metrics(tmp_path / "run")[STEPS]["val_loss"] > 0
    for name, resume in (("pp", lambda run: launch_train(2, dist_shards, run, "parallel.pp=2")),
                         ("fsdp", lambda run: launch_train(2, dist_shards, run)),
                         ("one", lambda run: train_here(dist_shards, run))):
        run = copy_until(tmp_path / "run", tmp_path / name, 4)
        resume(run)
        assert json.loads((run / "summary.json").read_text())["resumed_from_step"] == 4
        assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))


def test_copy_until_keeps_only_what_the_checkpoint_covers(single_run, tmp_path):
    """A resumed run that logged nothing after its checkpoint must fail the loss comparison, not pass on the
    original run's lines."""
    run = copy_until(single_run, tmp_path / "run", 4)
    assert sorted(metrics(run)) == [1, 2, 3, 4] and sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4"]
    assert not (run / "summary.json").exists()
    with pytest.raises(AssertionError, match="step 5 was not logged"):
        assert_losses_match(metrics(run), metrics(single_run), range(5, STEPS + 1))
