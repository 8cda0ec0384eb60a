"""Degrees → layout: filling -1, and the layouts that cannot split a model (UserError naming the field)."""

import pytest

from megalang.config import ParallelConfig, RunConfig
from megalang.errors import UserError
from megalang.model.build import build_llama_config
from megalang.parallel.mesh import resolve_dims
from megalang.parallel.pipeline import stage_layer_ranges
from megalang.config import ModelConfig


def llama(preset: str = "debug"):
    return build_llama_config(ModelConfig(preset=preset), 64, 32, {})


def test_dp_shard_fills_the_rest():
    dims = resolve_dims(ParallelConfig(tp=2, pp=2), 16, llama("tiny"))
    assert dims.degrees() == {"pp": 2, "dp_replicate": 1, "dp_shard": 4, "tp": 2}
    assert dims.dp == 4 and dims.fsdp and not dims.ddp


def test_dp_replicate_can_fill_instead():
    dims = resolve_dims(ParallelConfig(dp_replicate=-1, dp_shard=2), 8)
    assert (dims.dp_replicate, dims.dp_shard, dims.dp) == (4, 2, 8)


def test_one_process_is_all_ones():
    assert resolve_dims(ParallelConfig(), 1).world == 1


@pytest.mark.parametrize("parallel, world, message", [
    ({"tp": 2, "dp_shard": 1}, 3, "multiply to 2 but 3 ranks"),
    ({"tp": 2}, 3, "cannot be split"),
    ({"tp": 2, "dp_shard": 1}, 1, "multiply to 2 but 1 ranks"),
    ({"tp": 8, "dp_shard": 1}, 8, "num_attention_heads=4 is not divisible by parallel.tp=8"),
    ({"tp": 4, "dp_shard": 1}, 4, "num_key_value_heads=2 is not divisible by parallel.tp=4"),
    ({"pp": 3, "dp_shard": 1}, 3, "num_hidden_layers=2 is fewer than parallel.pp=3"),
])
def test_impossible_layouts_are_user_errors(parallel, world, message):
    with pytest.raises(UserError, match=message):
        resolve_dims(ParallelConfig(**parallel), world, llama())


def test_config_rejects_two_fill_degrees_and_zero():
    with pytest.raises(ValueError, match="only one of"):
        ParallelConfig(dp_replicate=-1, dp_shard=-1)
    with pytest.raises(ValueError, match="dp_shard must be >= 1"):
        ParallelConfig(dp_shard=0)


def test_stage_layer_ranges_cover_every_block_once():
    assert stage_layer_ranges(5, 2) == [range(0, 3), range(3, 5)]
    assert [len(r) for r in stage_layer_ranges(96, 2)] == [48, 48]


def test_tp_on_one_process_fails_before_the_run_folder(tmp_path):
    from train.conftest import make_shards, make_tokenizer
    from megalang.train.trainer import train

    shards = make_shards(tmp_path / "shards", make_tokenizer(tmp_path / "tok"), train_docs=20, val_docs=2)
    cfg = RunConfig.model_validate({"model": {"preset": "debug"}, "data": {"shards": str(shards)},
                                    "train": {"seq_len": 32, "device": "cpu"}, "parallel": {"tp": 2},
                                    "run": {"dir": str(tmp_path / "run")}})
    with pytest.raises(UserError, match="parallel: 1 ranks cannot be split .*tp=2"):
        train(cfg)
    assert not (tmp_path / "run").exists()

