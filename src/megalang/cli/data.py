"""`megalang data …` and `megalang tokenizer train`: documents, classifier, shards, tokenizer."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from megalang.cli.app import (
    classifier_app,
    counts_line,
    data_app,
    field_option,
    given,
    out,
    refuse_unused,
    tokenizer_app,
    user_errors,
)
from megalang.config import (
    ClassifierTrainConfig,
    PrepareConfig,
    SftFromConfig,
    TokenizeConfig,
    TokenizerTrainConfig,
    build_config,
)
from megalang.errors import UserError

# --- data -------------------------------------------------------------------------------------------


@data_app.command("prepare")
@user_errors
def data_prepare(
    ctx: typer.Context,
    input: Annotated[list[str], field_option(PrepareConfig, "inputs", "--input", "-i", suffix="; repeat for more")],
    out_dir: Annotated[str, field_option(PrepareConfig, "out", "--out", "-o")],
    text_field: Annotated[Optional[str], field_option(PrepareConfig, "text_field")] = None,
    min_chars: Annotated[Optional[int], field_option(PrepareConfig, "min_chars")] = None,
    normalize: Annotated[Optional[str], field_option(PrepareConfig, "normalize")] = None,
    exclude: Annotated[Optional[list[str]], field_option(PrepareConfig, "exclude", "--exclude", suffix="; repeatable")] = None,
    errors: Annotated[Optional[str], field_option(PrepareConfig, "errors")] = None,
    overwrite: Annotated[Optional[bool], field_option(PrepareConfig, "overwrite")] = None,
    steps: Annotated[
        Optional[str], field_option(PrepareConfig, "steps", suffix=", comma-separated, e.g. "
                                    "normalize,length,exact_dedup")
    ] = None,
    kind: Annotated[Optional[str], field_option(PrepareConfig, "kind")] = None,
    languages: Annotated[Optional[str], field_option(PrepareConfig, "languages", suffix=", comma-separated")] = None,
    decontaminate: Annotated[
        Optional[list[str]], field_option(PrepareConfig, "decontaminate", "--decontaminate", suffix="; repeatable")
    ] = None,
    workers: Annotated[Optional[int], field_option(PrepareConfig, "workers")] = None,
    executor: Annotated[Optional[str], field_option(PrepareConfig, "executor")] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Any other prepare key, key.sub=value (see docs/data.md); repeatable.")
    ] = None,
    recipe: Annotated[
        Optional[str], typer.Option("--recipe", help="YAML of prepare keys (e.g. recipes/security-pretrain.yaml); "
                                    "the options above and --set override it.")
    ] = None,
):
    """Read text/JSONL/JSON/Parquet/Arrow files, vulnerability feeds (NVD, CVE 5), STIX bundles, logs and WARC/WET
    web archives (recognised by content; local or fsspec URLs), run the steps in parallel → Parquet + manifest.

    With no --steps every document gets its source kind's full chain: normalize, length, quality, scrub,
    exact_dedup, near_dedup (dedup across the whole corpus). The kind (--kind, `kinds` globs, else the reader or
    the file type) picks the quality rules, what is scrubbed and whether near-dedup compares it:

    \b
      web       gopher_repetition, gopher_quality, c4, fineweb, entropy; scrub all but USER; near-dedup
      books     gutenberg (licence header/footer cut), gopher_quality (no length cap, no line rules), entropy;
                scrub all but USER; near-dedup
      code      entropy; scrub secrets and emails only (addresses and numbers are code); near-dedup
      chat      entropy; scrub all but USER; near-dedup
      security  gopher_repetition (whole repeated lines only), entropy; scrub all but IPV4/IPV6, plus USER;
                exact dedup only (CVE records and log windows are templated)

    --steps narrows the chain (e.g. normalize,length,exact_dedup); --decontaminate adds the decontaminate step;
    the classifier step is only run when listed. See docs/data.md, "The default chain per kind"."""
    from megalang.config import deep_merge, parse_overrides
    from megalang.config.load import load_yaml
    from megalang.data.pipeline import prepare

    options = given(inputs=input, out=out_dir, text_field=text_field, min_chars=min_chars, normalize=normalize,
                    exclude=exclude, errors=errors, overwrite=overwrite, kind=kind, workers=workers, executor=executor,
                    decontaminate=decontaminate,
                    languages=[c.strip() for c in languages.split(",") if c.strip()] if languages else None)
    base = load_yaml(recipe) if recipe else {}
    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else list(
        base.get("steps") or PrepareConfig.model_fields["steps"].default_factory())
    if decontaminate and "decontaminate" not in chosen:  # asking for eval files means asking for the step
        chosen.insert(chosen.index("length") + 1 if "length" in chosen else 0, "decontaminate")
    options["steps"] = chosen
    cfg = build_config(PrepareConfig, deep_merge(deep_merge(base, options), parse_overrides(set_ or [])),
                       f"{recipe} + arguments" if recipe else "arguments")
    if not {"quality", "scrub", "near_dedup"} & set(cfg.steps):
        refuse_unused(ctx, ["kind"], "only the quality, scrub and near_dedup steps read it, and "
                      f"--steps {','.join(cfg.steps)} has none of them")
    manifest = prepare(cfg)
    out.print(f"prepared {out_dir}: " + counts_line(manifest["counts"]))


@data_app.command("sft-from")
@user_errors
def data_sft_from(
    input: Annotated[str, field_option(SftFromConfig, "input", "--input", "-i")],
    out_dir: Annotated[str, field_option(SftFromConfig, "out", "--out", "-o")],
    val_fraction: Annotated[Optional[float], field_option(SftFromConfig, "val_fraction")] = None,
    seed: Annotated[Optional[int], field_option(SftFromConfig, "seed")] = None,
    questions: Annotated[Optional[str], field_option(SftFromConfig, "questions", suffix=", comma-separated")] = None,
    overwrite: Annotated[Optional[bool], field_option(SftFromConfig, "overwrite")] = None,
):
    """Turn the CVE and ATT&CK technique documents of a prepared folder into chat JSONL for `data.sft`: questions
    whose answers are the records' own fields, held out by record id (train.jsonl, val.jsonl)."""
    from megalang.data.sft_from import sft_from

    options = given(input=input, out=out_dir, val_fraction=val_fraction, seed=seed, overwrite=overwrite,
                    questions=[q.strip() for q in questions.split(",") if q.strip()] if questions else None)
    manifest = sft_from(build_config(SftFromConfig, options))
    out.print(f"instructions {out_dir}: " + counts_line(manifest["counts"]))


@classifier_app.command("train")
@user_errors
def data_classifier_train(
    input: Annotated[str, field_option(ClassifierTrainConfig, "input", "--input", "-i")],
    out_dir: Annotated[str, field_option(ClassifierTrainConfig, "out", "--out", "-o")],
    text_field: Annotated[Optional[str], field_option(ClassifierTrainConfig, "text_field")] = None,
    label_field: Annotated[Optional[str], field_option(ClassifierTrainConfig, "label_field")] = None,
    overwrite: Annotated[Optional[bool], field_option(ClassifierTrainConfig, "overwrite")] = None,
):
    """Embed labelled examples with all-MiniLM-L6-v2 and fit a logistic-regression reject/keep head."""
    from megalang.data.classifier import train_classifier

    options = given(input=input, out=out_dir, text_field=text_field, label_field=label_field, overwrite=overwrite)
    manifest = train_classifier(build_config(ClassifierTrainConfig, options))
    out.print(f"classifier {out_dir}: " + counts_line(manifest["counts"]))


@data_app.command("tokenize")
@user_errors
def data_tokenize(
    ctx: typer.Context,
    input: Annotated[str, typer.Option("--input", "-i", help="Folder from `data prepare` (sft: a JSONL file).")],
    tokenizer: Annotated[str, typer.Option(help="Folder from `tokenizer train` (sft: a HF model folder or .gguf).")],
    out_dir: Annotated[str, typer.Option("--out", "-o", help="Output shard folder.")],
    val_fraction: Annotated[Optional[float], field_option(TokenizeConfig, "val_fraction")] = None,
    val_source: Annotated[
        Optional[list[str]], field_option(TokenizeConfig, "val_sources", "--val-source", suffix="; repeatable")
    ] = None,
    overwrite: Annotated[Optional[bool], field_option(TokenizeConfig, "overwrite")] = None,
    workers: Annotated[Optional[int], field_option(TokenizeConfig, "workers")] = None,
    executor: Annotated[Optional[str], field_option(TokenizeConfig, "executor")] = None,
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

        # SftTokenizeConfig holds out val by its own keys (a file, or a hash fraction defaulting to 0)
        refuse_unused(ctx, ["val_fraction", "val_source"], "--format sft does not use it; hold out a val split "
                      "with --set val_input=FILE or --set val_fraction=F")
        refuse_unused(ctx, ["workers", "executor"], "--format sft runs in one process")
        options = given(input=input, model=tokenizer, out=out_dir, overwrite=overwrite)
        manifest = tokenize_sft(build_config(SftTokenizeConfig, deep_merge(options, parse_overrides(set_ or []))))
        out.print(f"tokenized {out_dir}: " + counts_line(manifest["counts"]))
        return
    if format != "text":
        raise UserError(f"--format {format}: use text or sft")
    options = given(input=input, tokenizer=tokenizer, out=out_dir, val_fraction=val_fraction, val_sources=val_source,
                    overwrite=overwrite, workers=workers, executor=executor)
    cfg = build_config(TokenizeConfig, deep_merge(options, parse_overrides(set_ or [])))
    manifest = tokenize(cfg)
    out.print(f"tokenized {out_dir}: " + counts_line(manifest["counts"]))


@tokenizer_app.command("train")
@user_errors
def tokenizer_train(
    input: Annotated[str, field_option(TokenizerTrainConfig, "input", "--input", "-i")],
    out_dir: Annotated[str, field_option(TokenizerTrainConfig, "out", "--out", "-o")],
    vocab_size: Annotated[Optional[int], field_option(TokenizerTrainConfig, "vocab_size")] = None,
    max_sentences: Annotated[Optional[int], field_option(TokenizerTrainConfig, "max_sentences")] = None,
    overwrite: Annotated[Optional[bool], field_option(TokenizerTrainConfig, "overwrite")] = None,
):
    """Train a SentencePiece BPE tokenizer (byte fallback) and write an identical tokenizer.json."""
    from megalang.data.tokenizer import train_tokenizer

    options = given(input=input, out=out_dir, vocab_size=vocab_size, max_sentences=max_sentences, overwrite=overwrite)
    manifest = train_tokenizer(build_config(TokenizerTrainConfig, options))
    out.print(f"tokenizer {out_dir}: " + counts_line(manifest["counts"]))
