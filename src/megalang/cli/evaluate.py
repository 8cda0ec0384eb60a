"""`megalang eval …`: perplexity, choice, classify, generate, robustness, harness, privacy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from megalang.cli.app import eval_app, field_option, given, out, passed, refuse_unused, user_errors
from megalang.config import build_config
from megalang.errors import UserError
from megalang.evaluate.common import EvalOptions

# The options every eval command shares (evaluate/common.EvalOptions): same names, help and defaults everywhere.
Model = Annotated[str, field_option(EvalOptions, "model")]
Out = Annotated[Optional[str], field_option(EvalOptions, "out", "--out")]
BatchSize = Annotated[Optional[int], field_option(EvalOptions, "batch_size")]
Limit = Annotated[Optional[int], field_option(EvalOptions, "limit")]
MaxLength = Annotated[Optional[int], field_option(EvalOptions, "max_length")]
Backend = Annotated[Optional[str], field_option(EvalOptions, "backend")]


def common(**options) -> EvalOptions:
    """The shared options as given, EvalOptions' defaults for the rest."""
    return build_config(EvalOptions, given(**options), "options")


def _print_metrics(result: dict, drop: tuple[str, ...] = (), one_line_values: bool = False) -> None:
    """The headline numbers as JSON; the per-item detail (and `drop`) is in --out. `one_line_values`: each top-level
    key on one line (a per-class table or a confusion matrix stays a few lines)."""
    shown = {k: v for k, v in result.items() if k not in ("items", "per_document", "configs", *drop)}
    if not one_line_values:
        out.print(json.dumps(shown, indent=2), markup=False)
        return
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in shown.items()]
    out.print("{\n" + ",\n".join(lines) + "\n}" if lines else "{}", markup=False, soft_wrap=True)


@eval_app.command("perplexity")
@user_errors
def eval_perplexity(
    ctx: typer.Context,
    model: Model,
    data: Annotated[str, typer.Option(help="Shard folder from `data tokenize`, a .txt file or a .jsonl file.")],
    out_file: Out = None,
    mode: Annotated[str, typer.Option(help="packed: windows over a shard split's token stream; rolling: per document, lm-eval's rolling windows; auto: packed for shards, rolling for text.")] = "auto",
    split: Annotated[str, typer.Option(help="Split to score (shards).")] = "val",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", "--window", help="Window length (default: the run's train.seq_len).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Rolling: tokens predicted per window (default: the window; smaller adds context).")] = None,
    text_field: Annotated[str, typer.Option(help="Rolling, JSONL: the field holding the text.")] = "text",
    # Not BatchSize: a window is seq_len tokens, far longer than the items of the other evals.
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    max_batches: Annotated[Optional[int], typer.Option(help="Packed: stop after this many batches.")] = None,
    max_docs: Annotated[Optional[int], typer.Option(help="Rolling: score only the first N documents.")] = None,
    backend: Backend = None,
):
    """Perplexity: token-level on packed shards, or per document (token/word/byte perplexity, bits per byte)."""
    from megalang.evaluate.perplexity import evaluate_rolling, perplexity

    if mode not in ("auto", "packed", "rolling"):
        raise UserError(f"--mode {mode}: expected auto, packed or rolling")
    o = common(model=model, out=out_file, backend=backend)
    if mode == "packed" or (mode == "auto" and Path(data).is_dir()):
        refuse_unused(ctx, ["stride", "text_field", "max_docs"], "packed perplexity does not use it; it is for --mode rolling")
        result = perplexity(o.model, data, split=split, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches, out=o.out,
                            backend=o.backend)
    else:
        refuse_unused_rolling(ctx, Path(data))
        result = evaluate_rolling(o.model, data, out=o.out, window=seq_len, stride=stride, batch_size=batch_size,
                                  text_field=text_field, split=split, max_docs=max_docs, backend=o.backend)
        result.pop("per_document")
    out.print(json.dumps(result, indent=2))


def refuse_unused_rolling(ctx: typer.Context, data: Path) -> None:
    """Rolling perplexity reads --split only from a shard folder and --text-field only from a .jsonl file."""
    refuse_unused(ctx, ["max_batches"], "rolling perplexity does not use it; it is for --mode packed (rolling stops at --max-docs)")
    if data.is_file():
        refuse_unused(ctx, ["split"], f"{data} is a file; --split picks a split of a shard folder")
    if data.is_dir() or (data.is_file() and data.suffix != ".jsonl"):
        refuse_unused(ctx, ["text_field"], f"{data} is not a .jsonl file; --text-field names a JSONL field")


@eval_app.command("choice")
@user_errors
def eval_choice(
    ctx: typer.Context,
    model: Model,
    data: Annotated[str, typer.Option(help="JSONL: question, choices, answer (index or letter), optional subject.")],
    out_file: Out = None,
    format: Annotated[str, typer.Option("--format", help="arc: 'Question: …\\nAnswer:' + ' choice'; mmlu: lettered options, ' A'…")] = "arc",
    fewshot: Annotated[Optional[str], typer.Option(help="JSONL of solved examples for few-shot prompts.")] = None,
    num_fewshot: Annotated[int, typer.Option(help="Examples per prompt (same subject when given).")] = 0,
    batch_size: BatchSize = None,
    limit: Limit = None,
    backend: Backend = None,
):
    """Multiple choice by log-likelihood (acc, acc_norm, acc_bytes, per subject), as lm-eval scores it."""
    from megalang.evaluate.choice import evaluate_choice

    if num_fewshot == 0:
        refuse_unused(ctx, ["fewshot"], "zero-shot prompts (--num-fewshot 0) use no examples; set --num-fewshot N")
    o = common(model=model, out=out_file, batch_size=batch_size, limit=limit, backend=backend)
    _print_metrics(evaluate_choice(o.model, data, out=o.out, fmt=format, fewshot=fewshot, num_fewshot=num_fewshot,
                                   batch_size=o.batch_size, limit=o.limit, backend=o.backend))


@eval_app.command("classify")
@user_errors
def eval_classify(
    model: Model,
    data: Annotated[str, typer.Option(help="JSONL: text, label.")],
    out_file: Out = None,
    verbalizer: Annotated[Optional[str], typer.Option(help="JSON file {label: word}, or 'label=word,…' (default: the labels themselves).")] = None,
    template: Annotated[str, typer.Option(help="Prompt with {text}; each label's word is scored after it.")] = "{text}\nLabel:",
    positive: Annotated[Optional[str], typer.Option(help="Two-class sets: the label whose probability is swept (default: the one named malicious/positive/1/true/yes, else the second label).")] = None,
    batch_size: BatchSize = None,
    limit: Limit = None,
    backend: Backend = None,
):
    """Classification through a verbaliser: accuracy, per-class and macro/weighted F1, confusion matrix; ROC AUC and a threshold sweep for two classes."""
    from megalang.evaluate.classify import evaluate_classify

    o = common(model=model, out=out_file, batch_size=batch_size, limit=limit, backend=backend)
    result = evaluate_classify(o.model, data, verbalizer=verbalizer, out=o.out, template=template, batch_size=o.batch_size,
                               limit=o.limit, positive=positive, backend=o.backend)
    _print_metrics(result, drop=("threshold_sweep",), one_line_values=True)


@eval_app.command("generate")
@user_errors
def eval_generate(
    ctx: typer.Context,
    model: Model,
    data: Annotated[str, typer.Option(help="JSONL: prompt, reference (or references).")],
    out_file: Out = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 64,
    until: Annotated[Optional[list[str]], typer.Option("--until", help="Stop string; repeatable.")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (sampling only).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (prompt i uses seed + i).")] = 0,
    limit: Limit = None,
):
    """Generation metrics: BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge-score), exact match."""
    from megalang.evaluate.textgen import evaluate_generate

    if temperature == 0:
        refuse_unused(ctx, ["top_p", "seed"], "greedy decoding (--temperature 0) does not use it; set --temperature above 0 to sample")
    o = common(model=model, out=out_file, limit=limit)
    _print_metrics(evaluate_generate(o.model, data, out=o.out, max_new_tokens=max_new_tokens, until=until,
                                     temperature=temperature, top_p=top_p, seed=seed, limit=o.limit))


@eval_app.command("robustness")
@user_errors
def eval_robustness(
    ctx: typer.Context,
    model: Model,
    data: Annotated[str, typer.Option(help="A choice or classify JSONL set.")],
    out_file: Out = None,
    perturbation: Annotated[Optional[list[str]], typer.Option("--perturbation", help="swap, delete, case, whitespace, keyboard; repeatable (default: all).")] = None,
    rate: Annotated[float, typer.Option(help="Probability each character is perturbed.")] = 0.1,
    attack: Annotated[Optional[str], typer.Option(help="A TextAttack attack instead of the perturbations (classify sets): deepwordbug, pruthi, word-deletion.")] = None,
    examples: Annotated[Optional[str], typer.Option(help="--attack: JSONL of the successful adversarial examples (default: beside --out).")] = None,
    seed: Annotated[int, typer.Option(help="Perturbation or attack seed.")] = 0,
    verbalizer: Annotated[Optional[str], typer.Option(help="Classify sets: as in `eval classify`.")] = None,
    format: Annotated[str, typer.Option("--format", help="Choice sets: arc or mmlu.")] = "arc",
    batch_size: BatchSize = None,
    limit: Limit = None,
):
    """Clean vs perturbed accuracy (seeded typos, case, whitespace) and the drop, or a TextAttack attack."""
    from megalang.evaluate.common import CHOICE
    from megalang.evaluate.robustness import detect_schema, evaluate_robustness

    if attack is not None:
        _attack(ctx, model, data, out_file, attack, examples, seed, verbalizer, batch_size, limit)
        return
    refuse_unused(ctx, ["examples"], "--examples is for --attack")

    if passed(ctx, "verbalizer") or passed(ctx, "format"):  # each is read for one kind of set only
        if detect_schema(data) is CHOICE:
            refuse_unused(ctx, ["verbalizer"], f"{data} is a choice set; --verbalizer is for classify sets")
        else:
            refuse_unused(ctx, ["format"], f"{data} is a classify set; --format is for choice sets")
    o = common(model=model, out=out_file, batch_size=batch_size, limit=limit)
    _print_metrics(evaluate_robustness(o.model, data, out=o.out, perturbations=perturbation, rate=rate, seed=seed,
                                       verbalizer=verbalizer, fmt=format, batch_size=o.batch_size, limit=o.limit))


def _attack(ctx, model, data, out_file, attack, examples, seed, verbalizer, batch_size, limit) -> None:
    from megalang.evaluate.attack import check_attack, evaluate_attack
    from megalang.evaluate.common import CHOICE
    from megalang.evaluate.robustness import detect_schema

    check_attack(attack)
    refuse_unused(ctx, ["perturbation", "rate", "format"], "--attack replaces the perturbations")
    if detect_schema(data) is CHOICE:
        raise UserError(f"{data} is a choice set; --attack works on classify sets (text, label)")
    o = common(model=model, out=out_file, batch_size=batch_size, limit=limit)
    _print_metrics(evaluate_attack(o.model, data, attack, out=o.out, examples=examples, seed=seed,
                                   verbalizer=verbalizer, batch_size=o.batch_size, limit=o.limit))


@eval_app.command("harness")
@user_errors
def eval_harness(
    model: Model,
    tasks: Annotated[str, typer.Option(help="Comma-separated lm-eval task names.")],
    out_file: Out = None,
    include_path: Annotated[Optional[str], typer.Option(help="Folder of local lm-eval task YAML files.")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(help="Few-shot examples (default: the task's).")] = None,
    batch_size: BatchSize = None,
    limit: Annotated[Optional[int], field_option(EvalOptions, "limit", suffix=" of each task")] = None,
    max_length: MaxLength = None,
):
    """lm-evaluation-harness tasks (incl. local YAML tasks) through megalang's lm-eval adapter."""
    from megalang.evaluate.harness import evaluate_harness

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    o = common(model=model, out=out_file, batch_size=batch_size, limit=limit, max_length=max_length)
    _print_metrics(evaluate_harness(o.model, names, out=o.out, include_path=include_path, num_fewshot=num_fewshot,
                                    batch_size=o.batch_size, limit=o.limit, max_length=o.max_length))


@eval_app.command("privacy")
@user_errors
def eval_privacy(
    run: Annotated[str, typer.Option(help="Run folder trained with data.canaries (DP or not).")],
    out_file: Out = None,
    candidates: Annotated[int, typer.Option(help="Random secrets each canary is ranked against (the whole space when it is smaller).")] = 10_000,
    members: Annotated[int, typer.Option(help="Training and held-out examples each for membership inference.")] = 200,
    seed: Annotated[int, typer.Option(help="Seeds the candidate secrets and the examples picked.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Sequences per forward pass.")] = 64,
):
    """Privacy audit: canary exposure (Secret Sharer), loss-threshold membership inference (AUC, TPR at 1% FPR)
    and the run's ε; written to RUN/privacy.json."""
    from megalang.evaluate.privacy import evaluate_privacy

    result = evaluate_privacy(run, candidates=candidates, members=members, seed=seed, batch_size=batch_size,
                              out=out_file)
    _print_metrics({k: v for k, v in result.items() if k not in ("canaries", "controls")})
