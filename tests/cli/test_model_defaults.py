"""CLI options that set a config field take their help and default from the pydantic model (cli/app.field_option),
and an option left unset leaves the model's default in force; the eval commands share EvalOptions."""

from __future__ import annotations

import inspect

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from megalang.cli import app
from megalang.cli.app import shown_default
from megalang.config import (
    ClassifierTrainConfig, PlanConfig, PrepareConfig, ShapeConfig, SftTokenizeConfig, TokenizeConfig,
    TokenizerTrainConfig,
)
from megalang.evaluate.common import EvalOptions

runner = CliRunner()
EVALS = ("perplexity", "choice", "classify", "generate", "robustness", "harness")

# command → the models its options set
MODELS = {
    ("data", "prepare"): (PrepareConfig,),
    ("data", "classifier", "train"): (ClassifierTrainConfig,),
    ("data", "tokenize"): (TokenizeConfig,),
    ("tokenizer", "train"): (TokenizerTrainConfig,),
    ("plan",): (PlanConfig, ShapeConfig),
    **{("eval", name): (EvalOptions,) for name in EVALS},
}
# CLI parameter → the field it sets, where the names differ
RENAMED = {"input": "inputs", "out_dir": "out", "out_file": "out", "val_source": "val_sources", "layers": "num_layers",
           "heads": "num_heads", "kv_heads": "num_kv_heads"}
# Options named like a field that deliberately do not read it
OWN_HELP = {
    # --input / --tokenizer / --out also mean the SFT config's input / model / out (--format sft)
    ("data", "tokenize"): {"input", "tokenizer", "out_dir"},
    # a perplexity window is seq_len tokens, so its batch size (8) is not the other evals' (16)
    ("eval", "perplexity"): {"batch_size"},
}


def click_command(path):
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def field_of(path, param):
    """(model, field name) the parameter sets, or None."""
    if param.name in OWN_HELP.get(path, ()):
        return None
    for model in MODELS[path]:
        for name in (param.name, RENAMED.get(param.name)):
            if name in model.model_fields:
                return model, name
    return None


def mapped(path):
    return [(p, *field_of(path, p)) for p in click_command(path).params if field_of(path, p)]


def squash(text: str) -> str:
    """Help text compared without case or line wrapping (click wraps long words too)."""
    return "".join(text.split()).lower()


@pytest.mark.parametrize("path", list(MODELS), ids=" ".join)
def test_option_help_and_default_come_from_the_model(path):
    options = mapped(path)
    assert options, path
    shown_help = squash(runner.invoke(app, [*path, "--help"]).output)
    for param, model, name in options:
        field = model.model_fields[name]
        assert field.description, f"{model.__name__}.{name} has no description for --help"
        assert squash(field.description) in squash(param.help), (path, param.name)
        assert squash(field.description) in shown_help, (path, param.name)
        default = None if field.is_required() else shown_default(name, field.get_default(call_default_factory=True))
        assert (f"[default: {default}]" in param.help) == (default is not None), (path, param.name, param.help)
        if default is not None:
            assert squash(f"[default: {default}]") in shown_help, (path, param.name)
        # the option itself defaults to nothing, so leaving it unset cannot override the model (or a recipe)
        assert param.required or param.default is None, (path, param.name, param.default)


def test_the_mapping_covers_the_options_the_issue_names():
    names = {path: {p.name for p, _, _ in mapped(path)} for path in MODELS}
    assert {"min_chars", "normalize", "text_field", "workers", "executor", "kind", "errors", "steps"} <= names[("data", "prepare")]
    assert {"val_fraction", "val_source", "overwrite"} <= names[("data", "tokenize")]
    assert {"vocab_size", "max_sentences"} <= names[("tokenizer", "train")]
    assert {"seq_len", "gpus", "sharding", "mfu", "layers", "vocab_size"} <= names[("plan",)]
    for name in EVALS:
        assert {"model", "out_file"} <= names[("eval", name)]
    for name in ("choice", "classify", "robustness", "harness"):
        assert {"batch_size", "limit"} <= names[("eval", name)]


def test_shared_eval_options_read_the_same_everywhere():
    """Same name → same help and default in every eval command (harness's --limit counts per task)."""
    seen: dict[str, tuple] = {}
    for name in EVALS:
        for param, _, field in mapped(("eval", name)):
            help_ = param.help.replace(" of each task.", ".") if name == "harness" and field == "limit" else param.help
            assert seen.setdefault(field, (param.opts, help_, param.default)) == (param.opts, help_, param.default), (name, field)
    assert set(seen) == {"model", "out", "batch_size", "limit", "max_length", "backend"}


# --- unset options: the stage receives the model's defaults ---------------------------------------


@pytest.fixture
def capture(monkeypatch):
    """Replace a stage function; return the list its calls land in."""

    def patch(target: str, result):
        calls = []

        def fake(*args, **kwargs):
            calls.append((args, kwargs))
            return result

        monkeypatch.setattr(target, fake)
        return calls

    return patch


@pytest.mark.parametrize(
    "args, target, expected",
    [
        (["data", "prepare", "-i", "corpus", "-o", "out"], "megalang.data.pipeline.prepare",
         PrepareConfig(inputs=["corpus"], out="out")),
        (["data", "classifier", "train", "-i", "l.jsonl", "-o", "out"], "megalang.data.classifier.train_classifier",
         ClassifierTrainConfig(input="l.jsonl", out="out")),
        (["data", "tokenize", "-i", "docs", "--tokenizer", "tok", "-o", "out"], "megalang.data.tokenize.tokenize",
         TokenizeConfig(input="docs", tokenizer="tok", out="out")),
        (["data", "tokenize", "--format", "sft", "-i", "c.jsonl", "--tokenizer", "m", "-o", "out"],
         "megalang.data.sft.tokenize_sft", SftTokenizeConfig(input="c.jsonl", model="m", out="out")),
        (["tokenizer", "train", "-i", "docs", "-o", "out"], "megalang.data.tokenizer.train_tokenizer",
         TokenizerTrainConfig(input="docs", out="out")),
    ],
    ids=["prepare", "classifier", "tokenize", "tokenize-sft", "tokenizer"],
)
def test_unset_options_leave_the_model_defaults(capture, args, target, expected):
    calls = capture(target, {"counts": {}})
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert calls[0][0][0] == expected


def test_plan_options_override_the_recipe_only_when_given(capture, tmp_path):
    calls = capture("megalang.plan.plan", {"feasible": True})
    recipe = tmp_path / "plan.yaml"
    recipe.write_text("preset: debug\ntokens: 1.0e9\nseq_len: 512\ngpus: 4\n")
    assert runner.invoke(app, ["plan", str(recipe), "--gpus", "2", "--json"]).exit_code == 0
    assert calls[0][0][0] == PlanConfig(preset="debug", tokens=1e9, seq_len=512, gpus=2)


def _evaluate_functions():
    from megalang.evaluate.choice import evaluate_choice
    from megalang.evaluate.classify import evaluate_classify
    from megalang.evaluate.harness import evaluate_harness
    from megalang.evaluate.robustness import evaluate_robustness
    from megalang.evaluate.textgen import evaluate_generate

    return [evaluate_choice, evaluate_classify, evaluate_generate, evaluate_robustness, evaluate_harness]


def test_evaluate_functions_default_like_eval_options():
    """Python callers get the CLI's defaults too."""
    for fn in _evaluate_functions():
        for name, p in inspect.signature(fn).parameters.items():
            if name in EvalOptions.model_fields and p.default is not inspect.Parameter.empty:
                assert p.default == EvalOptions.model_fields[name].default, (fn.__name__, name)


@pytest.mark.parametrize(
    "args, target",
    [
        (["eval", "choice", "--data", "d.jsonl"], "megalang.evaluate.choice.evaluate_choice"),
        (["eval", "classify", "--data", "d.jsonl"], "megalang.evaluate.classify.evaluate_classify"),
        (["eval", "generate", "--data", "d.jsonl"], "megalang.evaluate.textgen.evaluate_generate"),
        (["eval", "robustness", "--data", "d.jsonl"], "megalang.evaluate.robustness.evaluate_robustness"),
        (["eval", "harness", "--tasks", "t"], "megalang.evaluate.harness.evaluate_harness"),
    ],
    ids=["choice", "classify", "generate", "robustness", "harness"],
)
def test_eval_commands_pass_the_shared_defaults(capture, args, target):
    calls = capture(target, {})
    result = runner.invoke(app, [*args, "--model", "m.gguf"])
    assert result.exit_code == 0, result.output
    args_, kwargs = calls[0]
    assert args_[0] == "m.gguf" and kwargs["out"] is None
    for name in ("batch_size", "limit", "max_length"):
        if name in kwargs:
            assert kwargs[name] == EvalOptions.model_fields[name].default, name
