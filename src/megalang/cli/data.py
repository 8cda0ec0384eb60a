"""`megalang data …` and `megalang tokenizer train`: documents, classifier, shards, tokenizer."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from megalang.cli.app import classifier_app, counts_line, data_app, out, tokenizer_app, user_errors
from megalang.config import PrepareConfig, TokenizeConfig, TokenizerTrainConfig, build_config
from megalang.errors import UserError

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
    out.print(f"prepared {out_dir}: " + counts_line(manifest["counts"]))


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
    out.print(f"classifier {out_dir}: " + counts_line(manifest["counts"]))


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
        out.print(f"tokenized {out_dir}: " + counts_line(manifest["counts"]))
        return
    if format != "text":
        raise UserError(f"--format {format}: use text or sft")
    options = dict(input=input, tokenizer=tokenizer, out=out_dir, val_fraction=val_fraction,
                   val_sources=val_source or [], overwrite=overwrite)
    cfg = build_config(TokenizeConfig, deep_merge(options, parse_overrides(set_ or [])))
    manifest = tokenize(cfg)
    out.print(f"tokenized {out_dir}: " + counts_line(manifest["counts"]))


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
    out.print(f"tokenizer {out_dir}: " + counts_line(manifest["counts"]))
