"""What every eval kind shares: its common options, reading JSONL eval sets line by line with schema checks, and
the result JSON.

Errors name the file and line, so a bad record in a 10 000-line set is found at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from megalang import __version__
from megalang.errors import UserError
from megalang.jsonl import json_objects
from megalang.store.files import sha256_file, write_json_atomic


class EvalOptions(BaseModel):
    """The options every `megalang eval` command shares, declared once: the CLI builds them from these fields
    (help, defaults) and passes them to the evaluate_* functions by keyword."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="run folder, exported Hugging Face folder or .gguf file")
    out: str | None = Field(None, description="write the result JSON here")
    batch_size: int = Field(16, description="items per forward pass")
    limit: int | None = Field(None, description="use only the first N items")
    max_length: int | None = Field(None, description="longest model input in tokens (default: the model's positions)")
    backend: Literal["auto", "transformers", "llama.cpp"] = Field(
        "auto", description="who runs the model: auto = llama.cpp for a .gguf file (or a folder holding one), "
        "transformers otherwise")


@dataclass(frozen=True)
class Schema:
    """The keys one kind of eval record has: all `required`, any of `optional`, nothing else."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()


CHOICE = Schema("choice", ("question", "choices", "answer"), ("subject", "id"))
CLASSIFY = Schema("classify", ("text", "label"), ("id",))
GENERATE = Schema("generate", ("prompt",), ("reference", "references", "id"))
SCHEMAS = (CHOICE, CLASSIFY, GENERATE)


def read_jsonl(path: str | Path, schema: Schema | None) -> list[dict[str, Any]]:
    """Records of a JSONL file (blank lines skipped), each checked against `schema` (unless None); each
    keeps its line number in `_line`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a JSONL eval set with --data")
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; eval sets are UTF-8 JSONL") from None
    for n, record in json_objects(lines, path):
        if schema is not None:
            check_schema(record, schema, f"{path}:{n}")
        record["_line"] = n
        records.append(record)
    if not records:
        raise UserError(f"{path}: no records; the eval set is empty")
    return records


def check_schema(record: dict[str, Any], schema: Schema, where: str) -> None:
    """Missing keys, unknown keys, and records of another kind mixed in are each a clear error."""
    keys = set(record)
    missing = [k for k in schema.required if k not in keys]
    unknown = sorted(keys - set(schema.required) - set(schema.optional))
    if missing or unknown:
        other = next((s for s in SCHEMAS if s is not schema and set(s.required) <= keys), None)
        if other is not None:
            raise UserError(
                f"{where}: a {other.name} record ({', '.join(other.required)}) in a {schema.name} set; "
                f"mixed schemas: every line needs {', '.join(schema.required)}"
            )
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
        allowed = ", ".join(schema.required + schema.optional)
        raise UserError(f"{where}: {'; '.join(problems)} ({schema.name} records have {allowed})")


def result_header(kind: str, model: str, data: str | None, settings: dict[str, Any]) -> dict[str, Any]:
    """What every result JSON starts with: what was evaluated, on what, how, by which megalang."""
    header: dict[str, Any] = {"kind": kind, "model": str(Path(model).resolve()), "megalang_version": __version__}
    if data is not None:
        p = Path(data)
        header["data"] = str(p.resolve())
        header["data_sha256"] = sha256_file(p / "manifest.json") if p.is_dir() else sha256_file(p)
    header["settings"] = settings
    return header


def write_result(out: str | Path | None, result: dict[str, Any]) -> dict[str, Any]:
    """Write atomically (a reader never sees half a result), creating the parent folder."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)
    return result


def load_scorer(model: str, batch_size: int, max_length: int | None = None, backend: str = "auto"):
    """(LoadedModel, Scorer) for a run folder, an exported folder or a GGUF file; `backend` as model/load.py
    choose_backend (a GGUF runs in llama.cpp by default: LlamaCppScorer, which the caller closes)."""
    from megalang.evaluate.scoring import Scorer
    from megalang.model.load import choose_backend, load_model_for_inference

    backend, path = choose_backend(model, backend)
    if backend == "llama.cpp":
        from megalang.evaluate.scoring_llamacpp import LlamaCppScorer
        from megalang.model.llamacpp import LlamaCppTokenizer, load_llamacpp
        from megalang.model.load import LoadedModel

        llm = load_llamacpp(path, n_ctx=max_length + 1 if max_length else None)
        loaded = LoadedModel(llm, LlamaCppTokenizer(llm), "llama.cpp", path)
        return loaded, LlamaCppScorer(llm, loaded.tokenizer, batch_size=batch_size, max_length=max_length)
    loaded = load_model_for_inference(path)
    return loaded, Scorer(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length)
