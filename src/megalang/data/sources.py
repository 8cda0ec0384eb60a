"""The one rule for globs on a document's source path, used by `kinds`, `mixture`, `--exclude` and `--val-source`.

A glob (fnmatch syntax, case-sensitive) matches a source when it matches the whole path or any trailing part of
it that starts after a `/`, so `crawl/*`, `*/crawl/*` and `*.py` all work on absolute paths and URLs alike.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath


@functools.lru_cache(maxsize=256)
def glob_regex(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One compiled regex for "matches any of these globs" (fnmatchcase semantics)."""
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)").match


def path_and_tails(source: str) -> list[str]:
    parts = PurePosixPath(source).parts
    return [source] + ["/".join(parts[i:]) for i in range(len(parts))]


def matches_any(source: str, patterns: Sequence[str]) -> bool:
    """True when any of `patterns` matches `source` by the rule above."""
    if not patterns:
        return False
    match = glob_regex(tuple(patterns))
    return any(match(t) for t in path_and_tails(source))


def source_matches(source: str, pattern: str) -> bool:
    return matches_any(source, (pattern,))
