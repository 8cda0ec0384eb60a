"""Loading configs: YAML recipes, `key.sub=value` overrides, validation that reports every problem at once, and the
`--help` listing of every key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from megalang.config.base import T
from megalang.errors import UserError

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
    # A model may rename keys of a raw tree (RunConfig: keys that moved); done per source, so an override under
    # either name wins over the recipe's.
    prepare = getattr(model, "prepare_raw", lambda tree: tree)
    source = f"{recipe} + overrides" if recipe else "overrides"
    try:
        data = deep_merge(prepare(load_yaml(recipe) if recipe else {}), prepare(parse_overrides(overrides or [])))
    except ValueError as e:
        raise UserError(f"{source}: {e}") from None
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
