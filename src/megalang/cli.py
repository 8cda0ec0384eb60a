"""The `megalang` command: parse arguments, build the stage config, call the stage function, print errors.

Heavy imports (torch, transformers) happen inside the commands so `megalang --help` stays instant.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from megalang import __version__
from megalang.config import (
    PrepareConfig,
    RunConfig,
    TokenizeConfig,
    TokenizerTrainConfig,
    build_config,
    config_help,
    load_config,
)
from megalang.errors import UserError, from_os_error

app = typer.Typer(
    rich_markup_mode=None,
    help="megalang: raw text → clean data → tokenizer → token shards → training → eval → export → generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Prepare documents and tokenize them into shards.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train a SentencePiece BPE tokenizer.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate a run or an exported model.", no_args_is_help=True)
app.add_typer(data_app, name="data")
classifier_app = typer.Typer(help="Train the document classifier used by the `classifier` prepare step.", no_args_is_help=True)
data_app.add_typer(classifier_app, name="classifier")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(eval_app, name="eval")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def user_errors(fn):
    """Turn a UserError (or a disk-full / permission OSError) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as e:
            # An OSError is a user's problem only for disk-full / permission / path-in-the-way errnos.
            problem = e if isinstance(e, UserError) else from_os_error(e)
            if problem is None:
                raise
            err.print(f"[bold red]error:[/] {escape(str(problem))}", markup=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool):
    if value:
        out.print(f"megalang {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
):
    pass


# --- data -------------------------------------------------------------------------------------------


@data_app.command("prepare")
@user_errors
def data_prepare(
    input: Annotated[list[str], typer.Option("--input", "-i", help="File, folder or glob; repeat for more.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output folder.")],
    text_field: Annotated[str, typer.Option(help="JSONL key / Parquet column with the text.")] = "text",
    min_chars: Annotated[int, typer.Option(help="Drop shorter documents.")] = 16,
    normalize: Annotated[str, typer.Option(help="NFC, NFKC or none.")] = "NFC",
    exclude: Annotated[
        Optional[list[str]], typer.Option("--exclude", help="Glob on file paths to skip while walking; repeatable.")
    ] = None,
    errors: Annotated[str, typer.Option(help="strict: stop at a bad file; skip: skip it and list it in the manifest.")] = "strict",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    steps: Annotated[
        Optional[str], typer.Option(help="Comma-separated steps, e.g. normalize,length,quality,scrub,exact_dedup,near_dedup.")
    ] = None,
    kind: Annotated[str, typer.Option(help="Source kind for the quality filters: auto, web, books, code, chat.")] = "auto",
    decontaminate: Annotated[
        Optional[list[str]], typer.Option("--decontaminate", help="Eval file/folder/glob to decontaminate against; repeatable.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel workers (0 = all cores).")] = 0,
    executor: Annotated[str, typer.Option(help="local (processes) or ray.")] = "local",
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any other prepare key, key.sub=value (see docs/data.md); repeatable.")
    ] = None,
):
    """Read text/JSONL/JSON/Parquet/Arrow files (local or fsspec URLs), run the steps (normalise, length, quality,
    scrub, decontaminate, exact and near dedup) in parallel → Parquet + manifest."""
    from megalang.config import deep_merge, parse_overrides
    from megalang.data.pipeline import prepare

    options = dict(
        inputs=input, out=out_dir, text_field=text_field, min_chars=min_chars, normalize=normalize,
        exclude=exclude or [], errors=errors, overwrite=overwrite, kind=kind, workers=workers, executor=executor,
        decontaminate=decontaminate or [],
    )
    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else list(PrepareConfig.model_fields["steps"].default_factory())
    if decontaminate and "decontaminate" not in chosen:  # asking for eval files means asking for the step
        chosen.insert(chosen.index("length") + 1 if "length" in chosen else 0, "decontaminate")
    options["steps"] = chosen
    cfg = build_config(PrepareConfig, deep_merge(options, parse_overrides(set_ or [])))
    manifest = prepare(cfg)
    out.print(f"prepared {out_dir}: " + _counts(manifest["counts"]))


@classifier_app.command("train")
@user_errors
def data_classifier_train(
    input: Annotated[str, typer.Option("--input", "-i", help="JSONL of labelled examples (text, label: 1 = reject).")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output classifier folder.")],
    text_field: Annotated[str, typer.Option(help="JSON key with the text.")] = "text",
    label_field: Annotated[str, typer.Option(help="JSON key with the 0/1 label.")] = "label",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
):
    """Embed labelled examples with all-MiniLM-L6-v2 and fit a logistic-regression reject/keep head."""
    from megalang.config import ClassifierTrainConfig
    from megalang.data.classifier import train_classifier

    cfg = build_config(ClassifierTrainConfig, dict(input=input, out=out_dir, text_field=text_field,
                                                   label_field=label_field, overwrite=overwrite))
    manifest = train_classifier(cfg)
    out.print(f"classifier {out_dir}: " + _counts(manifest["counts"]))


@data_app.command("tokenize")
@user_errors
def data_tokenize(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder from `data prepare` (sft: a JSONL file).")],
    tokenizer: Annotated[str, typer.Option(help="Folder from `tokenizer train` (sft: a HF model folder or .gguf).")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output shard folder.")],
    val_fraction: Annotated[float, typer.Option(help="Fraction of documents held out for validation.")] = 0.01,
    val_source: Annotated[
        Optional[list[str]], typer.Option("--val-source", help="Glob on the source path sent to val; repeatable.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    format: Annotated[str, typer.Option(help="text: documents; sft: chats/prompt-completion with a loss mask.")] = "text",
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Any other tokenize key, e.g. curriculum.by=length (see docs/data.md); repeatable."),
    ] = None,
):
    """Tokenize documents into packed train/val shards (EOS between documents)."""
    from megalang.config import deep_merge, parse_overrides
    from megalang.data.tokenize import tokenize

    if format == "sft":  # issue #6: chat template + assistant-only loss mask (data/sft.py)
        from megalang.config import SftTokenizeConfig
        from megalang.data.sft import tokenize_sft

        # --set val_input=FILE or val_fraction=F holds out a val split (SftTokenizeConfig)
        options = dict(input=input, model=tokenizer, out=out_dir, overwrite=overwrite)
        manifest = tokenize_sft(build_config(SftTokenizeConfig, deep_merge(options, parse_overrides(set_ or []))))
        out.print(f"tokenized {out_dir}: " + _counts(manifest["counts"]))
        return
    if format != "text":
        raise UserError(f"--format {format}: use text or sft")
    options = dict(input=input, tokenizer=tokenizer, out=out_dir, val_fraction=val_fraction,
                   val_sources=val_source or [], overwrite=overwrite)
    cfg = build_config(TokenizeConfig, deep_merge(options, parse_overrides(set_ or [])))
    manifest = tokenize(cfg)
    out.print(f"tokenized {out_dir}: " + _counts(manifest["counts"]))


@tokenizer_app.command("train")
@user_errors
def tokenizer_train(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder from `data prepare`.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output tokenizer folder.")],
    vocab_size: Annotated[int, typer.Option(help="Vocabulary size.")] = 8192,
    max_sentences: Annotated[
        Optional[int], typer.Option(help="Sentences (runs of up to 8 lines) sampled for training; bounds time and memory.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
):
    """Train a SentencePiece BPE tokenizer (byte fallback) and write an identical tokenizer.json."""
    from megalang.data.tokenizer import train_tokenizer

    options = dict(input=input, out=out_dir, vocab_size=vocab_size, overwrite=overwrite)
    if max_sentences is not None:
        options["max_sentences"] = max_sentences
    cfg = build_config(TokenizerTrainConfig, options)
    manifest = train_tokenizer(cfg)
    out.print(f"tokenizer {out_dir}: " + _counts(manifest["counts"]))


# --- train / eval / export / generate ---------------------------------------------------------------

_TRAIN_HELP = "\n".join(f"  {k} = {d}  {desc}" for k, d, desc in config_help(RunConfig))


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    help="Train a model: `megalang train [RECIPE.yaml] [key.sub=value ...]`.\n\nKeys:\n\n" + _TRAIN_HELP.replace("\n", "\n\n"),
)
@user_errors
def train_cmd(args: Annotated[Optional[list[str]], typer.Argument(help="Recipe file, then key=value overrides.")] = None):
    recipe, overrides = _split_recipe(args or [])
    cfg = load_config(RunConfig, recipe, overrides)
    if cfg.launcher == "ray":
        from megalang.parallel.ray_launch import train_on_ray as train
    else:
        from megalang.train.trainer import train

    summary = train(cfg)
    out.print(json.dumps(summary, indent=2))


@app.command(
    "launch",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
@user_errors
def launch_cmd(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option(help="Processes per node (one per GPU; on CPU, a few).")] = 1,
    nnodes: Annotated[str, typer.Option(help="Nodes, or MIN:MAX for an elastic job.")] = "1",
    rdzv_endpoint: Annotated[Optional[str], typer.Option(help="HOST:PORT every node reaches (multi-node).")] = None,
    rdzv_id: Annotated[str, typer.Option(help="Job id shared by the nodes of one run.")] = "megalang",
    max_restarts: Annotated[int, typer.Option(help="Restart the whole group this often after a failure "
                                                   "(each restart resumes from the newest checkpoint).")] = 0,
):
    """Run a command on several processes through torchrun: `megalang launch --nproc 2 -- train RECIPE.yaml k=v`."""
    from megalang.launch import launch

    launch(list(ctx.args), nproc, nnodes, rdzv_endpoint, rdzv_id, max_restarts)


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


@app.command("export")
@user_errors
def export_cmd(
    run: Annotated[str, typer.Option(help="Run folder.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output Hugging Face folder.")],
    step: Annotated[Optional[int], typer.Option(help="Checkpoint step (default: the newest complete one).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    merge: Annotated[bool, typer.Option(help="LoRA run: merge the adapters into the base (else: the adapter folder).")] = False,
):
    """Write a Hugging Face folder (safetensors, config, tokenizer) that plain transformers loads."""
    from megalang.export import export

    export(run, out_dir, step=step, overwrite=overwrite, merge=merge)
    out.print(f"exported {out_dir}")


@app.command("generate")
@user_errors
def generate_cmd(
    model: Annotated[str, typer.Option(help="Exported folder or run folder.")],
    prompt: Annotated[str, typer.Option(help="Text to continue.")],
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="0 = off.")] = 50,
    top_p: Annotated[float, typer.Option(help="1.0 = off.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
):
    """Continue a prompt."""
    from megalang.generate import generate

    text = generate(model, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    out.print(text, markup=False)


@app.command("demo")
@user_errors
def demo_cmd(
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Demo folder.")] = "runs/demo",
    max_steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the demo recipe's).")] = None,
    preset: Annotated[str, typer.Option(help="Model preset.")] = "tiny",
):
    """The whole pipeline on the Python standard library's own source, with a few modules held out."""
    from megalang.demo import demo

    demo(out_dir, max_steps=max_steps, preset=preset, console=out)


# --- planning and monitoring ------------------------------------------------------------------------


@app.command("plan")
@user_errors
def plan_cmd(
    recipe: Annotated[Optional[str], typer.Argument(help="Plan YAML (keys as below); options override it.")] = None,
    preset: Annotated[Optional[str], typer.Option(help="Model preset (debug … 100b).")] = None,
    params: Annotated[Optional[str], typer.Option(help="Parameter count, e.g. 7e9 or 100B; a Llama-like shape is derived.")] = None,
    hidden_size: Annotated[Optional[int], typer.Option(help="Shape: model width (with --layers, --intermediate-size, --heads).")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Shape: decoder blocks.")] = None,
    intermediate_size: Annotated[Optional[int], typer.Option(help="Shape: MLP width.")] = None,
    heads: Annotated[Optional[int], typer.Option(help="Shape: query heads.")] = None,
    kv_heads: Annotated[Optional[int], typer.Option(help="Shape: key/value heads (default: --heads).")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="Shape: vocabulary size.")] = None,
    tokens: Annotated[Optional[str], typer.Option(help="Training tokens in total, e.g. 2e12 or 10T.")] = None,
    seq_len: Annotated[Optional[int], typer.Option(help="Tokens per sequence.")] = None,
    global_batch_tokens: Annotated[Optional[int], typer.Option(help="Tokens per optimizer step.")] = None,
    micro_batch_size: Annotated[Optional[int], typer.Option(help="Sequences per forward pass per GPU.")] = None,
    gpu: Annotated[Optional[str], typer.Option(help="a100-40gb, a100-80gb, h100, h200, b200 or cpu.")] = None,
    gpus: Annotated[Optional[int], typer.Option(help="GPUs in total.")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option(help="GPUs per NVLink node.")] = None,
    sharding: Annotated[Optional[str], typer.Option(help="ddp, zero1, zero2 or zero3 (FSDP).")] = None,
    tp: Annotated[Optional[int], typer.Option(help="Tensor-parallel degree.")] = None,
    pp: Annotated[Optional[int], typer.Option(help="Pipeline stages.")] = None,
    activation_checkpointing: Annotated[
        Optional[bool], typer.Option("--activation-checkpointing/--no-activation-checkpointing", help="Recompute blocks in backward.")
    ] = None,
    precision: Annotated[Optional[str], typer.Option(help="bf16, fp16, fp8 or fp32.")] = None,
    mfu: Annotated[Optional[float], typer.Option(help="Assumed model FLOPs utilisation (default 0.4).")] = None,
    deadline_days: Annotated[Optional[float], typer.Option(help="Wall-clock budget in days.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
):
    """FLOPs, memory per GPU, tokens/s, days and a verdict for a training plan; exit 1 when it is not feasible."""
    from megalang.config import PlanConfig, load_yaml
    from megalang.plan import format_plan, parse_count, plan

    data = load_yaml(recipe) if recipe else {}
    shape = {k: v for k, v in dict(hidden_size=hidden_size, num_layers=layers, intermediate_size=intermediate_size,
                                   num_heads=heads, num_kv_heads=kv_heads, vocab_size=vocab_size).items() if v is not None}
    chosen = {"preset": preset, "params": parse_count(params, "--params") if params else None, "shape": shape or None}
    if any(v is not None for v in chosen.values()):
        for key in chosen:
            data.pop(key, None)
        data.update({k: v for k, v in chosen.items() if v is not None})
    options = dict(tokens=parse_count(tokens, "--tokens") if tokens else None, seq_len=seq_len,
                   global_batch_tokens=global_batch_tokens, micro_batch_size=micro_batch_size, gpu=gpu, gpus=gpus,
                   gpus_per_node=gpus_per_node, sharding=sharding, tp=tp, pp=pp,
                   activation_checkpointing=activation_checkpointing, precision=precision, mfu=mfu,
                   deadline_days=deadline_days)
    data.update({k: v for k, v in options.items() if v is not None})
    result = plan(build_config(PlanConfig, data, recipe or "options"))
    out.print(json.dumps(result, indent=2) if as_json else format_plan(result), markup=False)
    if not result["feasible"]:
        raise typer.Exit(1)


@app.command("report")
@user_errors
def report_cmd(run: Annotated[str, typer.Argument(help="Run folder (with metrics.jsonl).")]):
    """Write RUN/report.html with PNG plots (loss, lr, grad norm, tokens/s, MFU, memory) and a summary table."""
    from megalang.monitor.report import write_report

    path = write_report(run)
    out.print(f"report {path}", markup=False)


# --- artifacts --------------------------------------------------------------------------------------


@app.command("verify")
@user_errors
def verify_cmd(path: Annotated[str, typer.Argument(help="Artifact folder.")]):
    """Re-hash an artifact against its manifest; exit 1 naming each mismatching file."""
    from megalang.artifacts import verify

    problems = verify(path)
    for p in problems:
        err.print(f"mismatch: {p}", markup=False)
    if problems:
        raise typer.Exit(1)
    out.print(f"ok: {path}")


@app.command("lineage")
@user_errors
def lineage_cmd(
    path: Annotated[str, typer.Argument(help="Artifact folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Print the chain of artifacts back to the raw input."""
    from megalang.artifacts import lineage

    chain = lineage(path)
    if as_json:
        out.print(json.dumps(chain, indent=2), markup=False)
        return
    for node in chain:
        pad = "  " * node["depth"]
        if node.get("missing"):
            out.print(f"{pad}{node['stage']}  {node['path']}  (missing)", markup=False)
            continue
        raw = f"  raw inputs: {node['raw_inputs']} files, {node['raw_bytes']} bytes" if node["raw_inputs"] else ""
        out.print(f"{pad}{node['stage']}  {node['path']}  sha256:{node['manifest_sha256'][:12]}  {_counts(node['counts'])}{raw}", markup=False)


def _split_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        recipe = args[0]
        if not Path(recipe).suffix in (".yaml", ".yml"):
            raise UserError(f"'{recipe}': expected a recipe .yaml file or key=value overrides")
        return recipe, args[1:]
    return None, args


def _counts(counts: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if not isinstance(v, (dict, list)))


def main() -> None:
    # transformers' per-call progress bars ("Loading weights", "Writing model shards") drown the stage output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app(prog_name="megalang")


if __name__ == "__main__":
    sys.exit(main())
