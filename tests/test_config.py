"""config.py: YAML recipes, dotted overrides, all errors at once."""

from pathlib import Path

import pytest

from megalang.config import RunConfig, load_config, parse_overrides
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
        load_config(RunConfig, None, ["train.max_steps=abc", "train.precision=fp8", "nope.key=1", "train.lr=-1"])
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("train.max_steps", "'abc'", "train.precision", "fp8", "nope: unknown key", "train.lr"):
        assert part in msg


def test_cross_field_rules():
    with pytest.raises(UserError, match="min_lr"):
        load_config(RunConfig, None, ["train.lr=1e-4", "train.min_lr=1e-3"])


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


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate(recipe):
    from megalang.config import load_yaml

    data = load_yaml(recipe)
    data.pop("demo", None)  # demo-only section, read by `megalang demo`
    from megalang.config import PlanConfig, build_config

    # plan-*.yaml are `megalang plan` inputs, not training recipes.
    build_config(PlanConfig if recipe.name.startswith("plan-") else RunConfig, data, str(recipe))
