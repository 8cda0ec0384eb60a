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
from megalang.errors import UserError

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
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(eval_app, name="eval")

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def user_errors(fn):
    """Turn a UserError into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True)
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
):
    """Read text/JSONL(.gz)/Parquet files, normalise, drop empty and short docs, exact-dedup → Parquet."""
    from megalang.data.pipeline import prepare

    cfg = build_config(
        PrepareConfig,
        dict(
            inputs=input, out=out_dir, text_field=text_field, min_chars=min_chars, normalize=normalize,
            exclude=exclude or [], errors=errors, overwrite=overwrite,
        ),
    )
    manifest = prepare(cfg)
    out.print(f"prepared {out_dir}: " + _counts(manifest["counts"]))


@data_app.command("tokenize")
@user_errors
def data_tokenize(
    input: Annotated[str, typer.Option("--input", "-i", help="Folder from `data prepare`.")],
    tokenizer: Annotated[str, typer.Option(help="Folder from `tokenizer train`.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output shard folder.")],
    val_fraction: Annotated[float, typer.Option(help="Fraction of documents held out for validation.")] = 0.01,
    val_source: Annotated[
        Optional[list[str]], typer.Option("--val-source", help="Glob on the source path sent to val; repeatable.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
):
    """Tokenize documents into packed train/val shards (EOS between documents)."""
    from megalang.data.tokenize import tokenize

    cfg = build_config(
        TokenizeConfig,
        dict(
            input=input, tokenizer=tokenizer, out=out_dir, val_fraction=val_fraction,
            val_sources=val_source or [], overwrite=overwrite,
        ),
    )
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
    from megalang.train.trainer import train

    summary = train(cfg)
    out.print(json.dumps(summary, indent=2))


@eval_app.command("perplexity")
@user_errors
def eval_perplexity(
    model: Annotated[str, typer.Option(help="Run folder or exported Hugging Face folder.")],
    data: Annotated[str, typer.Option(help="Shard folder from `data tokenize`.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "val",
    seq_len: Annotated[Optional[int], typer.Option(help="Window length (default: the run's train.seq_len).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 8,
    max_batches: Annotated[Optional[int], typer.Option(help="Stop after this many batches.")] = None,
    out_file: Annotated[Optional[str], typer.Option("--out", help="Write the result JSON here.")] = None,
):
    """Token-level perplexity on a shard split."""
    from megalang.evaluate.perplexity import perplexity

    result = perplexity(model, data, split=split, seq_len=seq_len, batch_size=batch_size, max_batches=max_batches, out=out_file)
    out.print(json.dumps(result, indent=2))


@app.command("export")
@user_errors
def export_cmd(
    run: Annotated[str, typer.Option(help="Run folder.")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output Hugging Face folder.")],
    step: Annotated[Optional[int], typer.Option(help="Checkpoint step (default: the newest complete one).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
):
    """Write a Hugging Face folder (safetensors, config, tokenizer) that plain transformers loads."""
    from megalang.export import export

    export(run, out_dir, step=step, overwrite=overwrite)
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
