"""One JSON object per line: the parsing and the one-line errors every JSONL input of megalang shares."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from megalang.errors import UserError


def parse_object(line: str, where: str, expect: str = "a JSON object") -> dict[str, Any]:
    """The object on one line; a UserError naming `where` (FILE:LINE) for bad JSON or a non-object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg}); one JSON object per line") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected {expect}, got {type(obj).__name__}")
    return obj


def json_objects(lines: Iterable[str], path: Any, expect: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of `path`, numbered from 1."""
    for n, line in enumerate(lines, start=1):
        if line.strip():
            yield n, parse_object(line, f"{path}:{n}", expect)
