"""Typed config for every stage: pydantic models, YAML recipes, `key.sub=value` overrides.

Precedence: command-line override > recipe file > default. Validation reports every problem at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from megalang.errors import UserError

T = TypeVar("T", bound=BaseModel)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- data -------------------------------------------------------------------------------------------


class PrepareConfig(Section):
    """`megalang data prepare`: raw files → clean, deduplicated documents (Parquet)."""

    inputs: list[str] = Field(min_length=1, description="files, folders (walked recursively) or globs")
    out: str = Field(description="output artifact folder")
    exclude: list[str] = Field(default_factory=list, description="glob patterns on file paths to skip while walking")
    text_field: str = Field("text", description="JSONL key / Parquet column holding the text")
    normalize: Literal["NFC", "NFKC", "none"] = Field("NFC", description="Unicode normalisation form")
    min_chars: int = Field(16, ge=0, description="drop documents shorter than this after normalisation")
    max_doc_bytes: int = Field(64 << 20, ge=1, description="refuse a single document larger than this")
    steps: list[str] = Field(
        default_factory=lambda: ["normalize", "length", "exact_dedup"],
        description="document steps, in order",
    )
    docs_per_file: int = Field(100_000, ge=1, description="documents per output Parquet file")
    errors: Literal["strict", "skip"] = Field(
        "strict", description="strict: stop at the first bad file; skip: skip bad files/lines, list them in the manifest"
    )
    overwrite: bool = Field(False, description="replace an existing output folder")


class TokenizerTrainConfig(Section):
    """`megalang tokenizer train`: SentencePiece BPE with byte fallback, plus tokenizer.json."""

    input: str = Field(description="folder written by `megalang data prepare`")
    out: str = Field(description="output tokenizer folder")
    vocab_size: int = Field(8192, ge=260, le=1 << 20, description="vocabulary size incl. byte and special tokens")
    character_coverage: float = Field(0.9995, gt=0, le=1, description="SentencePiece character coverage")
    # 300k sentences ≈ 85 MB of code: SentencePiece then trains in ~15 s using ~1.2 GB of memory.
    max_sentences: int = Field(
        300_000, ge=1, description="training sentences sampled (each a run of up to 8 lines, newlines kept)"
    )
    max_sentence_length: int = Field(8192, ge=16, description="longer lines are skipped by SentencePiece")
    seed: int = 1234
    overwrite: bool = False


class TokenizeConfig(Section):
    """`megalang data tokenize`: documents → packed token shards (train-*/val-*)."""

    input: str = Field(description="folder written by `megalang data prepare`")
    tokenizer: str = Field(description="folder written by `megalang tokenizer train`")
    out: str = Field(description="output shard folder")
    val_fraction: float = Field(0.01, ge=0, lt=1, description="documents held out for validation (by id hash)")
    val_sources: list[str] = Field(
        default_factory=list, description="glob patterns on a document's source path; matches go to val"
    )
    tokens_per_shard: int = Field(1 << 28, ge=1024, description="tokens per .bin file before starting a new one")
    batch_docs: int = Field(1024, ge=1, description="documents encoded per batch")
    overwrite: bool = False


# --- training ---------------------------------------------------------------------------------------


class ModelConfig(Section):
    preset: str = Field("tiny", description="debug, tiny, small, 1b, 8b, 70b, 100b")
    pretrained: str | None = Field(None, description="Hugging Face folder (or GGUF) to start from")
    dropout: float = Field(0.0, ge=0, lt=1, description="attention dropout")


class DataConfig(Section):
    shards: str | None = Field(None, description="folder from `megalang data tokenize`")


class TrainSection(Section):
    max_steps: int = Field(1000, ge=1, description="optimizer steps")
    seq_len: int = Field(256, ge=8, description="tokens per sample")
    micro_batch_size: int = Field(8, ge=1, description="samples per forward pass per rank")
    global_batch_tokens: int | None = Field(
        None, ge=1, description="tokens per optimizer step over all ranks; default one micro-batch per rank"
    )
    lr: float = Field(6e-4, gt=0, description="peak learning rate")
    min_lr: float = Field(6e-5, ge=0, description="learning rate at the end of the cosine")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay (matrices only)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU")
    compile: bool = Field(False, description="torch.compile each block")
    activation_checkpointing: bool = Field(False, description="recompute block activations in backward")
    log_every: int = Field(10, ge=1, description="steps between metrics lines")
    eval_every: int = Field(0, ge=0, description="steps between val-loss evaluations (0 = only at the end)")
    eval_batches: int = Field(20, ge=1, description="micro-batches per val-loss evaluation")
    progress: bool = Field(True, description="show a progress bar when attached to a terminal")

    @model_validator(mode="after")
    def _check(self) -> TrainSection:
        problems = []
        if self.min_lr > self.lr:
            problems.append(f"train.min_lr ({self.min_lr}) must be <= train.lr ({self.lr})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CheckpointConfig(Section):
    every: int = Field(1000, ge=0, description="steps between checkpoints (0 = only the final one)")
    keep: int = Field(2, ge=1, description="newest complete checkpoints kept")
    resume: Literal["auto", "never"] = Field("auto", description="auto: resume from the newest complete one")


class RunSection(Section):
    dir: str = Field("runs/default", description="run folder: checkpoints, metrics.jsonl, summary.json")


class RunConfig(Section):
    """`megalang train`: one training run."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainSection = Field(default_factory=TrainSection)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    run: RunSection = Field(default_factory=RunSection)
    seed: int = Field(1234, description="seeds weights, data order and dropout")


# --- loading ----------------------------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=1 a.c=x` → {"a": {"b": 1, "c": "x"}}; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise UserError(f"override '{item}': expected key.sub=value (for example train.max_steps=100)")
        value = parse_scalar(raw)
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override '{item}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return tree


def parse_scalar(raw: str) -> Any:
    """YAML scalar parsing, plus floats like 3e-4 that YAML 1.1 leaves as strings."""
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: recipe not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: recipe is not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}:{where} invalid YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of sections (model:, train:, ...)")
    return data


def format_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            problems.append(f"{loc}: unknown key")
        elif e["type"] == "missing":
            problems.append(f"{loc}: required")
        elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], dict):
            problems.append(f"{loc}: {msg} (got {e['input']!r})")
        else:
            problems.append(f"{loc}: {msg}" if e["loc"] else msg)
    return f"invalid config ({source}): " + "; ".join(problems)


def build_config(model: type[T], data: dict[str, Any], source: str = "arguments") -> T:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, source)) from None


def load_config(model: type[T], recipe: str | Path | None = None, overrides: list[str] | None = None) -> T:
    data = load_yaml(recipe) if recipe else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    source = f"{recipe} + overrides" if recipe else "overrides"
    return build_config(model, data, source)


def config_help(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, description) for every field, for `--help` texts and docs."""
    rows = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += config_help(ann, f"{prefix}{name}.")
        else:
            default = field.get_default(call_default_factory=True) if not field.is_required() else "(required)"
            rows.append((f"{prefix}{name}", repr(default), field.description or ""))
    return rows
