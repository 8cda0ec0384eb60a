"""Heuristic quality filters — Gopher quality and repetition, C4 lines, FineWeb — plus a low-entropy filter.

Thresholds are the published ones, as datatrove implements them (src/datatrove/pipeline/filters/*.py, v0.10).
Each filter returns None to keep a document, a new text to keep a changed one (C4 drops lines), or `Reject(reason)`.
Which filters run depends on the document's source kind (`web`, `books`, `code`, `chat`): web rules would drop
plays and verse (short, repeated lines) and all source code, so books and code get only the rules that fit them.
Speed: a document is tokenised into words once (one regex, in C) and every filter shares those words; the
repetition counts run on integer n-gram keys in numpy instead of joined strings.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from megalang.data._charsets import TERMINAL_PUNCTUATION
from megalang.data.gutenberg import GutenbergBoilerplate
from megalang.data.sources import source_matches
from megalang.data.words import count_sentences, is_symbol, split_words
from megalang.errors import UserError

KINDS = ("web", "books", "code", "chat", "security")

_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)


class Features:
    """What several filters need from one text, each computed at most once."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> list[str]:
        return split_words(self.text)

    @cached_property
    def word_lengths(self) -> np.ndarray:
        return np.fromiter(map(len, self.words), dtype=np.int64, count=len(self.words))

    @cached_property
    def word_ids(self) -> np.ndarray:
        """Small integer per distinct word, in order of appearance: n-grams become integer keys."""
        vocab: dict[str, int] = {}
        get = vocab.setdefault
        return np.fromiter((get(w, len(vocab)) for w in self.words), dtype=np.uint64, count=len(self.words))

    def ngram_keys(self, n: int) -> np.ndarray:
        """One uint64 per word n-gram (polynomial hash of the word ids; wraps mod 2^64).

        Built from the (n-1)-gram keys, so all of n = 2…10 cost ten vector passes instead of fifty-four.
        """
        cache = self.__dict__.setdefault("_ngram_keys", {})
        if n in cache:
            return cache[n]
        ids = self.word_ids
        if len(ids) < n:
            keys = np.empty(0, dtype=np.uint64)
        elif n == 1:
            keys = ids + np.uint64(1)
        else:
            keys = self.ngram_keys(n - 1)[:-1] * _KEY_MIX + ids[n - 1 :] + np.uint64(1)
        cache[n] = keys
        return keys

    def ngram_chars(self, n: int, sep: int) -> np.ndarray:
        """Character length of each word n-gram joined with `sep` characters between words."""
        csum = np.concatenate([[0], np.cumsum(self.word_lengths)])
        return csum[n:] - csum[:-n] + sep * (n - 1)


@dataclass(frozen=True)
class Reject:
    reason: str


Verdict = None | str | Reject  # keep unchanged / keep with this new text / drop


# --- the filters ------------------------------------------------------------------------------------

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@dataclass
class GopherQuality:
    """Gopher (Rae et al. 2021, §A.1.1) document rules; thresholds as in datatrove's GopherQualityFilter."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: tuple[str, ...] = STOP_WORDS
    name = "gopher_quality"

    def __call__(self, f: Features) -> Verdict:
        text, words = f.text, f.words
        n_words = len(words)
        plain = [w for w in words if not is_symbol(w)]
        if self.min_doc_words and len(plain) < self.min_doc_words:
            return Reject("short_doc")
        if self.max_doc_words and len(plain) > self.max_doc_words:
            return Reject("long_doc")
        if plain:
            avg = sum(map(len, plain)) / len(plain)
            if self.min_avg_word_length and avg < self.min_avg_word_length:
                return Reject("below_avg_word_length")
            if self.max_avg_word_length and avg > self.max_avg_word_length:
                return Reject("above_avg_word_length")
        if not n_words:
            return None  # only reachable with min_doc_words disabled; the ratios below are undefined
        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return Reject("too_many_hashes")
        if self.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio:
            return Reject("too_many_ellipsis")
        lines = text.splitlines() or [""]
        if self.max_bullet_lines_ratio and sum(
            s.lstrip().startswith(("•", "-")) for s in lines
        ) / len(lines) > self.max_bullet_lines_ratio:
            return Reject("too_many_bullets")
        if self.max_ellipsis_lines_ratio and sum(
            s.rstrip().endswith(("...", "…")) for s in lines
        ) / len(lines) > self.max_ellipsis_lines_ratio:
            return Reject("too_many_end_ellipsis")
        if self.min_alpha_words_ratio and sum(
            any(c.isalpha() for c in w) for w in words
        ) / n_words < self.min_alpha_words_ratio:
            return Reject("below_alpha_ratio")
        if self.min_stop_words and len(set(self.stop_words).intersection(words)) < self.min_stop_words:
            return Reject("not_enough_stop_words")
        return None


_PARAGRAPH_RE = re.compile(r"\n{2,}")
_LINES_RE = re.compile(r"\n+")


@dataclass
class GopherRepetition:
    """Gopher Table A1 repetition rules: duplicate lines/paragraphs, top n-grams, duplicated n-grams."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
    dup_n_grams: tuple[tuple[int, float], ...] = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    name = "gopher_repetition"

    def __call__(self, f: Features) -> Verdict:
        text = f.text
        if not text:
            return Reject("empty")
        paragraphs = _PARAGRAPH_RE.split(text.strip())
        dups, dup_chars = find_duplicates(paragraphs)
        if self.dup_para_frac and dups / len(paragraphs) > self.dup_para_frac:
            return Reject("dup_para_frac")
        if self.dup_para_char_frac and dup_chars / len(text) > self.dup_para_char_frac:
            return Reject("dup_para_char_frac")
        lines = _LINES_RE.split(text)
        dups, dup_chars = find_duplicates(lines)
        if self.dup_line_frac and dups / len(lines) > self.dup_line_frac:
            return Reject("dup_line_frac")
        if self.dup_line_char_frac and dup_chars / len(text) > self.dup_line_char_frac:
            return Reject("dup_line_char_frac")
        for n, frac in self.top_n_grams:
            if top_ngram_chars(f, n) / len(text) > frac:
                return Reject(f"top_{n}_gram")
        for n, frac in self.dup_n_grams:
            if duplicated_ngram_chars(f, n) / len(text) > frac:
                return Reject(f"duplicated_{n}_n_grams")
        return None


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """(number of repeated items, characters in the repeats), counting every occurrence after the first."""
    seen: set[str] = set()
    dups = chars = 0
    for item in items:
        if item in seen:
            dups += 1
            chars += len(item)
        else:
            seen.add(item)
    return dups, chars


def top_ngram_chars(f: Features, n: int) -> int:
    """Characters covered by the most frequent n-gram (space-joined length × count); ties go to the first seen."""
    keys = f.ngram_keys(n)
    if not len(keys):
        return 0
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    best = np.flatnonzero(counts == counts.max())
    top = best[np.argmin(first[best])]
    return int(f.ngram_chars(n, sep=1)[first[top]] * counts[top])


def duplicated_ngram_chars(f: Features, n: int) -> int:
    """Characters in n-grams that repeat an earlier one, scanning greedily (a repeat skips n words).

    The scan is sequential, but it can only start to matter at the first position whose key was seen
    before, so everything up to there is skipped in numpy; for most prose that is the whole document.
    """
    keys = f.ngram_keys(n)
    if not len(keys):
        return 0
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(keys):
        return 0
    is_repeat = np.ones(len(keys), dtype=bool)
    is_repeat[first] = False
    start = int(np.argmax(is_repeat))
    chars = f.ngram_chars(n, sep=0)
    seen = set(keys[:start].tolist())
    keys_list = keys.tolist()
    total, idx = 0, start
    while idx < len(keys_list):
        key = keys_list[idx]
        if key in seen:
            total += int(chars[idx])
            idx += n
        else:
            seen.add(key)
            idx += 1
    return total


_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_END_PUNCT = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class C4Lines:
    """C4 (Raffel et al. 2020) line rules; drops lines and returns the shortened text, or rejects the page.

    FineWeb runs it with `filter_no_terminal_punct=False` (its own line-punctuation rule replaces it); so do we.
    """

    remove_citations: bool = True
    filter_no_terminal_punct: bool = False
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True
    name = "c4"

    def __call__(self, f: Features) -> Verdict:
        kept, sentences = [], 0
        for line in f.text.splitlines():
            line = line.strip()
            words = line.split()
            if self.max_word_length != -1 and any(len(w) > self.max_word_length for w in words):
                continue
            if self.remove_citations:
                line = _CITATION_RE.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(_END_PUNCT) or line.endswith("...")):
                continue
            if len(words) < self.min_words_per_line:
                continue
            lower = line.lower()
            if self.filter_lorem_ipsum and "lorem ipsum" in lower:
                return Reject("lorem_ipsum")
            if self.filter_javascript and "javascript" in lower:
                continue
            if self.filter_curly_bracket and "{" in line:
                return Reject("curly_bracket")
            if self.filter_policy and any(p in lower for p in _POLICY):
                continue
            if self.min_num_sentences != -1:
                sentences += count_sentences(line)
            kept.append(line)
        if sentences < self.min_num_sentences:
            return Reject("too_few_sentences")
        text = "\n".join(kept).strip()
        return None if text == f.text else text


@dataclass
class FineWeb:
    """FineWeb's own rules (Penedo et al. 2024): line punctuation, short lines, duplicated lines, list-like pages."""

    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    name = "fineweb"

    def __call__(self, f: Features) -> Verdict:
        text = f.text
        lines = [line for line in text.split("\n") if line.strip() != ""]
        if not lines:
            return Reject("empty")
        ratio = sum(line.endswith(_TERMINAL) for line in lines) / len(lines)
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return Reject("line_punct_ratio")
        if sum(len(line) <= self.short_line_length for line in lines) / len(lines) > self.short_line_thr:
            return Reject("short_line_ratio")
        stripped = len(text) - text.count("\n")
        if stripped and find_duplicates(lines)[1] / stripped > self.char_duplicates_ratio:
            return Reject("char_dup_ratio")
        if f.words and text.count("\n") / len(f.words) > self.new_line_ratio:
            return Reject("list_ratio")
        return None


_TERMINAL = tuple(TERMINAL_PUNCTUATION)


@dataclass
class LowEntropy:
    """Drops degenerate text: byte entropy below `min_bits` (e.g. "aaaa…", long digit runs) or text that
    zlib squeezes below `min_compression_ratio` of its size (one block pasted hundreds of times).

    English prose has ~4.3 bits per byte and compresses to ~0.4; code ~4.7 and ~0.3; both are far from the
    thresholds, which is why this one filter is safe for every kind.
    """

    min_bits: float = 3.0
    min_bytes_for_bits: int = 64
    min_compression_ratio: float = 0.1
    min_bytes_for_ratio: int = 1024
    name = "entropy"

    def __call__(self, f: Features) -> Verdict:
        data = f.text.encode("utf-8")
        if len(data) >= self.min_bytes_for_bits and byte_entropy(data) < self.min_bits:
            return Reject("low_char_entropy")
        if len(data) >= self.min_bytes_for_ratio and len(zlib.compress(data, 1)) / len(data) < self.min_compression_ratio:
            return Reject("high_compression")
        return None


FILTERS: dict[str, type] = {
    cls.name: cls for cls in (GopherRepetition, GopherQuality, C4Lines, FineWeb, LowEntropy, GutenbergBoilerplate)
}

# FineWeb's order for web. Books lose Project Gutenberg's licence header and footer first (data/gutenberg.py), then
# keep Gopher's word-length, symbol and stop-word rules but not the length cap (a novel has >100k words), the line
# rules (verse), the alpha-word ratio (spaCy-style tokens make every comma a "word": blank verse lands at ~0.75) or
# the repetition rules (plays repeat speaker names, verse repeats refrains).
DEFAULT_KIND_FILTERS: dict[str, list[str]] = {
    "web": ["gopher_repetition", "gopher_quality", "c4", "fineweb", "entropy"],
    "books": ["gutenberg", "gopher_quality", "entropy"],
    "code": ["entropy"],
    "chat": ["entropy"],
    # Advisories, ATT&CK entries and log windows: no prose rules (stop words, punctuation, bullet and word-length
    # ratios would drop log lines and advisories); exact repeated lines/paragraphs and degenerate text still go.
    "security": ["gopher_repetition", "entropy"],
}
DEFAULT_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    # A log window repeats its n-grams by nature (the same daemon, message shape and host on every line); only
    # exact repeats of whole lines or paragraphs count. Logs compress far better than prose (a brute-force window
    # to ~0.06 of its size), so only text that squeezes below 0.02 is degenerate there.
    "security": {"gopher_repetition": {"top_n_grams": (), "dup_n_grams": ()},
                 "entropy": {"min_compression_ratio": 0.02}},
    "books": {"gopher_quality": {"max_doc_words": None, "max_bullet_lines_ratio": None,
                                 "max_ellipsis_lines_ratio": None, "min_alpha_words_ratio": None}},
}


# --- kinds ------------------------------------------------------------------------------------------

_CODE_SUFFIXES = frozenset(
    ".py .pyi .pyx .ipynb .c .h .cc .cpp .cxx .hpp .hh .cu .cuh .m .mm .java .kt .kts .scala .groovy .go .rs "
    ".swift .js .mjs .cjs .jsx .ts .tsx .vue .svelte .rb .php .pl .pm .lua .r .jl .hs .ml .mli .ex .exs .erl "
    ".clj .dart .cs .fs .vb .zig .nim .sh .bash .zsh .fish .ps1 .bat .sql .html .htm .xml .css .scss .less "
    ".toml .yaml .yml .ini .cfg .conf .proto .graphql .cmake .mk .dockerfile .gradle .csv .tsv".split()
)
_BOOK_SUFFIXES = frozenset(".txt .text .md .markdown .rst .adoc .tex .org".split())


def infer_kind(source: str, overrides: dict[str, str] | None = None, default: str = "auto") -> str:
    """The source kind of a document: a matching `kinds` glob wins, then `default` unless it is "auto",
    then the file type (code suffix → code, plain text → books, JSONL/Parquet/HF datasets → web)."""
    for pattern, kind in (overrides or {}).items():
        if source_matches(source, pattern):  # data/sources.py: the whole path or any trailing part of it
            return kind
    if default != "auto":
        return default
    name = source.lower()
    for suffix in (".gz", ".zst", ".bz2"):
        name = name.removesuffix(suffix)
    ext = name[name.rfind(".") :] if "." in name.rsplit("/", 1)[-1] else ""
    if ext in _CODE_SUFFIXES:
        return "code"
    if ext in _BOOK_SUFFIXES:
        return "books"
    return "web"


def kind_resolver(overrides: dict[str, str], default: str = "auto") -> Callable[[str, str], str]:
    """`kind(source, reader_kind)`: a `kinds` glob wins, then a `kind` other than auto, then the kind the reader
    gave (security for feeds, STIX and logs; web for web archives), then `infer_kind`'s guess from the name."""
    infer = functools.lru_cache(maxsize=65536)(functools.partial(infer_kind, overrides=overrides, default=default))
    overridden = functools.lru_cache(maxsize=65536)(lambda source: any(source_matches(source, p) for p in overrides))

    def kind(source: str, reader_kind: str = "") -> str:
        if reader_kind and default == "auto" and not overridden(source):
            return reader_kind
        return infer(source)

    return kind


# --- the step ---------------------------------------------------------------------------------------


def build_filter(name: str, params: dict[str, Any]) -> Callable[[Features], Verdict]:
    cls = FILTERS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UserError(f"quality_params.{name}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    params = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in params.items()}
    return cls(**params)


@dataclass
class KindFilters:
    """The filter chain per kind, resolved once from config."""

    chains: dict[str, list[Callable[[Features], Verdict]]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, kind_filters: dict[str, list[str]], params: dict[str, dict[str, Any]]) -> KindFilters:
        chains = {}
        for kind in sorted(set(KINDS) | set(kind_filters)):
            names = kind_filters.get(kind, DEFAULT_KIND_FILTERS.get(kind, ["entropy"]))
            unknown = [n for n in names if n not in FILTERS]
            if unknown:
                raise UserError(f"quality_filters.{kind}: unknown filter(s) {', '.join(unknown)}; known: {', '.join(FILTERS)}")
            chains[kind] = [
                build_filter(n, {**DEFAULT_PARAMS.get(kind, {}).get(n, {}), **params.get(n, {})}) for n in names
            ]
        return cls(chains)

    def apply(self, text: str, kind: str) -> tuple[str | None, str | None]:
        """(text to keep or None, "filter:reason" when rejected)."""
        features = Features(text)
        for flt in self.chains[kind]:
            verdict = flt(features)
            if verdict is None:
                continue
            if isinstance(verdict, Reject):
                return None, f"{flt.name}:{verdict.reason}"
            features = Features(verdict)
        return features.text, None


def byte_entropy(data: bytes) -> float:
    """Shannon entropy of the byte distribution, in bits per byte (0 to 8)."""
    if not data:
        return 0.0
    counts = np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
    p = counts[counts > 0] / len(data)
    return float(-(p * np.log2(p)).sum())
