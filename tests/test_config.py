"""config.py: YAML recipes, dotted overrides, all errors at once."""

from pathlib import Path

import pytest

from megalang.config import PrepareConfig, RunConfig, load_config, parse_overrides
from megalang.errors import UserError

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_overrides_parse_yaml_scalars_into_a_tree():
    tree = parse_overrides(["train.max_steps=10", "train.lr=3e-4", "train.compile=true", "run.dir=a/b", "seed=7"])
    assert tree == {"train": {"max_steps": 10, "lr": 3e-4, "compile": True}, "run": {"dir": "a/b"}, "seed": 7}


def test_override_beats_recipe_beats_default(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  max_steps: 50\n  seq_len: 64\n")
    cfg = load_config(RunConfig, recipe, ["train.max_steps=7"])
    assert (cfg.train.max_steps, cfg.train.seq_len, cfg.train.micro_batch_size) == (7, 64, 8)


def test_every_invalid_value_is_reported_at_once():
    with pytest.raises(UserError) as e:
        load_config(RunConfig, None, ["train.max_steps=abc", "train.precision=fp8", "nope.key=1", "optimizer.lr=-1"])
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("train.max_steps", "'abc'", "train.precision", "fp8", "nope: unknown key", "optimizer.lr"):
        assert part in msg


def test_cross_field_rules():
    with pytest.raises(UserError, match="min_lr"):
        load_config(RunConfig, None, ["optimizer.lr=1e-4", "schedule.min_lr=1e-3"])


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", "train..lr=1"])
def test_malformed_override(bad):
    with pytest.raises(UserError, match="key.sub=value"):
        parse_overrides([bad])


def test_override_into_a_value_is_refused():
    with pytest.raises(UserError, match="not a section"):
        parse_overrides(["seed=1", "seed.x=2"])


def test_invalid_yaml_names_file_and_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  max_steps: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml: line \d+"):
        load_config(RunConfig, recipe)
    recipe.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(RunConfig, recipe)
    recipe.write_bytes(b"\xff\xfe\x00bin")
    with pytest.raises(UserError, match="UTF-8"):
        load_config(RunConfig, recipe)


PREPARE_RECIPES = {"security-pretrain.yaml"}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    from megalang.config import load_yaml

    data = load_yaml(recipe)
    data.pop("demo", None)  # demo-only section, read by `megalang demo`
    from megalang.config import PlanConfig, build_config

    # plan-*.yaml are `megalang plan` inputs and security-pretrain.yaml a `data prepare --recipe`, not training
    # recipes; a prepare recipe names no inputs or output (the command line does).
    if recipe.name in PREPARE_RECIPES:
        build_config(PrepareConfig, {**data, "inputs": ["corpus"], "out": "out"}, str(recipe))
    else:
        build_config(PlanConfig if recipe.name.startswith("plan-") else RunConfig, data, str(recipe))


# --- keys grouped by concern (config/run.py MOVED_KEYS) --------------------------------------------------


def test_every_moved_key_is_still_read_under_its_old_name():
    from megalang.config import MOVED_KEYS

    values = {"lr": 0.5, "weight_decay": 0.3, "beta1": 0.7, "beta2": 0.8, "eps": 1e-5, "grad_clip": 2.0,
              "warmup_steps": 7, "min_lr": 0.01, "objective": "distill", "fused_loss": False, "nonfinite": "stop",
              "max_skipped_steps": 9, "spike_zscore": 4.0, "spike_window": 11}
    assert {old.split(".")[1] for old in MOVED_KEYS} == set(values)
    old_style = load_config(RunConfig, None, [f"{old}={values[old.split('.')[1]]}" for old in MOVED_KEYS])
    new_style = load_config(RunConfig, None, [f"{new}={values[old.split('.')[1]]}" for old, new in MOVED_KEYS.items()])
    assert old_style == new_style and old_style.optimizer.lr == 0.5 and old_style.loss.fused is False
    assert RunConfig.model_validate({"train": {"lr": 0.5, "spike_window": 11}}) == \
        RunConfig.model_validate({"optimizer": {"lr": 0.5}, "health": {"spike_window": 11}})


def test_old_and_new_name_together_is_one_line_naming_the_new_one(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optimizer:\n  lr: 0.001\n")
    assert load_config(RunConfig, recipe, ["train.lr=0.002"]).optimizer.lr == 0.002  # an override wins either way
    with pytest.raises(UserError, match=r"train.lr and optimizer.lr are both set; .* keep only optimizer.lr"):
        load_config(RunConfig, None, ["train.lr=0.002", "optimizer.lr=0.003"])


def test_saved_configs_use_the_new_groups():
    dumped = RunConfig.model_validate({"train": {"lr": 0.5}}).model_dump(mode="json")
    assert dumped["optimizer"]["lr"] == 0.5 and "lr" not in dumped["train"]
    assert {"optimizer", "schedule", "loss", "health"} <= set(dumped)
