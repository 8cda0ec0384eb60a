"""`megalang eval …`: perplexity, choice, classify, generate, robustness, harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from megalang.cli.app import eval_app, out, user_errors
from megalang.errors import UserError


@eval_app.command("perplexity")
@user_errors
def eval_perplexity(
    model: Annotated[str, typer.Option(help="Run folder, exported Hugging Face folder or .gguf file.")],
    data: Annotated[str, typer.Option(help="Shard folder from `data tokenize`, a .txt file or a .jsonl file.")],
    mode: Annotated[str, typer.Option(help="packed: windows over a shard split's token stream; rolling: per document, lm-eval's rolling windows; auto: packed for shards, rolling for text.")] = "auto",
    split: Annotated[str, typer.Option(help="Split to score (shards).")] = "val",
    seq_len: Annotated[Optional[int], typer.Option("--seq-len", "--window", help="Window length (default: the run's train.seq_len).")] = None,
    stride: Annotated[Optional[int], typer.Option(help="Rolling: tokens predicted per window (default: the window; smaller adds context).")] = None,
    text_field: Annotated[str, typer.Option(help="Rolling, JSONL: the field holding the text.")] = "text",
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    max_batches: Annotated[Optional[int], typer.Option(help="Packed: stop after this many batches.")] = None,
    max_docs: Annotated[Optional[int], typer.Option(help="Rolling: score only the first N documents.")] = None,
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
):
    """Perplexity: token-level on packed shards, or per document (token/word/byte perplexity, bits per byte)."""
    from megalang.evaluate.perplexity import evaluate_rolling, perplexity

    if mode not in ("auto", "packed", "rolling"):
        raise UserError(f"--mode {mode}: expected auto, packed or rolling")
    if mode == "packed" or (mode == "auto" and Path(data).is_dir()):
        result = perplexity(model, data, split=split, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches, out=out_file)
    else:
        result = evaluate_rolling(model, data, out_file, seq_len, stride, batch_size, text_field, split, max_docs)
        result.pop("per_document")
    out.print(json.dumps(result, indent=2))


_MODEL_HELP = "Run folder, exported Hugging Face folder or .gguf file."


def _print_metrics(result: dict) -> None:
    """The headline numbers; the per-item detail is in --out."""
    out.print(json.dumps({k: v for k, v in result.items() if k not in ("items", "per_document", "configs")}, indent=2), markup=False)


@eval_app.command("choice")
@user_errors
def eval_choice(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    data: Annotated[str, typer.Option(help="JSONL: question, choices, answer (index or letter), optional subject.")],
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
    format: Annotated[str, typer.Option("--format", help="arc: 'Question: …\\nAnswer:' + ' choice'; mmlu: lettered options, ' A'…")] = "arc",
    fewshot: Annotated[Optional[str], typer.Option(help="JSONL of solved examples for few-shot prompts.")] = None,
    num_fewshot: Annotated[int, typer.Option(help="Examples per prompt (same subject when given).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Questions per forward pass.")] = 16,
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N questions.")] = None,
):
    """Multiple choice by log-likelihood (acc, acc_norm, acc_bytes, per subject), as lm-eval scores it."""
    from megalang.evaluate.choice import evaluate_choice

    _print_metrics(evaluate_choice(model, data, out_file, format, fewshot, num_fewshot, batch_size, limit))


@eval_app.command("classify")
@user_errors
def eval_classify(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    data: Annotated[str, typer.Option(help="JSONL: text, label.")],
    verbalizer: Annotated[Optional[str], typer.Option(help="JSON file {label: word}, or 'label=word,…' (default: the labels themselves).")] = None,
    template: Annotated[str, typer.Option(help="Prompt with {text}; each label's word is scored after it.")] = "{text}\nLabel:",
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
    batch_size: Annotated[int, typer.Option(help="Records per forward pass.")] = 16,
    limit: Annotated[Optional[int], typer.Option(help="Score only the first N records.")] = None,
):
    """Classification through a verbaliser: accuracy, macro-F1, confusion matrix."""
    from megalang.evaluate.classify import evaluate_classify

    _print_metrics(evaluate_classify(model, data, verbalizer, out_file, template, batch_size, limit))


@eval_app.command("generate")
@user_errors
def eval_generate(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    data: Annotated[str, typer.Option(help="JSONL: prompt, reference (or references).")],
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per prompt.")] = 64,
    until: Annotated[Optional[list[str]], typer.Option("--until", help="Stop string; repeatable.")] = None,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (sampling only).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed (prompt i uses seed + i).")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N prompts.")] = None,
):
    """Generation metrics: BLEU and chrF (sacrebleu), ROUGE-1/2/L (rouge-score), exact match."""
    from megalang.evaluate.textgen import evaluate_generate

    _print_metrics(evaluate_generate(model, data, out_file, max_new_tokens, until, temperature, top_p, seed, limit))


@eval_app.command("robustness")
@user_errors
def eval_robustness(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    data: Annotated[str, typer.Option(help="A choice or classify JSONL set.")],
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
    perturbation: Annotated[Optional[list[str]], typer.Option("--perturbation", help="swap, delete, case, whitespace, keyboard, synonym; repeatable (default: all).")] = None,
    rate: Annotated[float, typer.Option(help="Probability each character (word, for synonym) is perturbed.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Perturbation seed.")] = 0,
    verbalizer: Annotated[Optional[str], typer.Option(help="Classify sets: as in `eval classify`.")] = None,
    format: Annotated[str, typer.Option("--format", help="Choice sets: arc or mmlu.")] = "arc",
    batch_size: Annotated[int, typer.Option(help="Items per forward pass.")] = 16,
    limit: Annotated[Optional[int], typer.Option(help="Use only the first N items.")] = None,
):
    """Clean vs perturbed accuracy (seeded typos, case, whitespace, synonyms) and the drop."""
    from megalang.evaluate.robustness import evaluate_robustness

    _print_metrics(evaluate_robustness(model, data, out_file, perturbation, rate, seed, verbalizer, format, batch_size, limit))


@eval_app.command("harness")
@user_errors
def eval_harness(
    model: Annotated[str, typer.Option(help=_MODEL_HELP)],
    tasks: Annotated[str, typer.Option(help="Comma-separated lm-eval task names.")],
    include_path: Annotated[Optional[str], typer.Option(help="Folder of local lm-eval task YAML files.")] = None,
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
    num_fewshot: Annotated[Optional[int], typer.Option(help="Few-shot examples (default: the task's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Contexts per forward pass.")] = 16,
    limit: Annotated[Optional[int], typer.Option(help="Documents per task.")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Model context length (default: the model's).")] = None,
):
    """lm-evaluation-harness tasks (incl. local YAML tasks) through megalang's lm-eval adapter."""
    from megalang.evaluate.harness import evaluate_harness

    names = [t.strip() for t in tasks.split(",") if t.strip()]
    _print_metrics(evaluate_harness(model, names, out_file, include_path, num_fewshot, batch_size, limit, max_length))
