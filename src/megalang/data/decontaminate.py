"""Decontamination: find training documents that share a long word n-gram (13 by default) with an eval set.

13-grams follow GPT-3's contamination study: long enough that common phrases never match, short enough that a
copied question or passage always does. Words are lowercased `\\w+` runs, so punctuation and case changes do
not hide a copy. The eval n-grams are held as a sorted uint64 array (8 bytes each) and looked up with numpy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from megalang.data.dedup import WordHashes

_WORD_RE = re.compile(r"\w+")
_MIX = np.uint64(0x9E3779B97F4A7C15)


_WORDS = WordHashes()


def _word_hashes(text: str) -> np.ndarray:
    words = _WORD_RE.findall(text.lower())
    return np.fromiter(map(_WORDS.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(text: str, n: int) -> np.ndarray:
    """One uint64 per word n-gram of `text` (none when it has fewer than n words)."""
    h = _word_hashes(text)
    if len(h) < n:
        return np.empty(0, dtype=np.uint64)
    keys = np.zeros(len(h) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            keys = keys * _MIX + h[k : len(h) - n + 1 + k]
    return keys


def build_index(texts: Iterable[str], n: int, min_words: int = 8) -> Contamination:
    """An index over the eval texts' n-grams. An eval item shorter than n words (but at least `min_words`)
    indexes as one n-gram of all its words, so a short question copied verbatim is still found; shorter
    ones are too generic to match on."""
    parts, lengths = [], set()
    for text in texts:
        keys = ngram_hashes(text, n)
        if not len(keys):
            count = len(_WORD_RE.findall(text))
            if count >= min_words:
                keys = ngram_hashes(text, count)
                lengths.add(count)
        parts.append(keys)
    index = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.uint64)
    return Contamination(index, (n, *sorted(lengths)))


class Contamination:
    """Looks documents up against an eval index: `matches` counts a document's n-grams found in it."""

    def __init__(self, index: np.ndarray, lengths: tuple[int, ...]):
        self.index, self.lengths = index, lengths

    def matches(self, text: str) -> int:
        if not len(self.index):
            return 0
        found = 0
        for n in self.lengths:
            keys = ngram_hashes(text, n)
            if len(keys):
                pos = np.minimum(np.searchsorted(self.index, keys), len(self.index) - 1)
                found += int((self.index[pos] == keys).sum())
        return found


@lru_cache(maxsize=4)
def load_contamination(eval_files: tuple[str, ...], text_field: str, n: int, max_doc_bytes: int) -> Contamination:
    """The index over every document of the eval files, built once per process (workers each build it)."""
    from megalang.data.readers import find_input_files, read_documents

    files = find_input_files(list(eval_files)).files
    texts = (text for path in files for text, _ in read_documents(path, text_field, max_doc_bytes))
    return build_index(texts, n)
