"""Words as datatrove counts them: spaCy's English tokenizer rules (prefix / suffix / infix / URL / special
cases, data/_spacy_en.py) run as compiled regexes, plus the sentence and symbol counts the quality filters use.
The datatrove parity test (tests/data/test_quality_parity_datatrove.py) compares the token lists one for one."""

from __future__ import annotations

import re

from megalang.data import _spacy_en as _spacy
from megalang.data._charsets import PUNCTUATION_SET, SENTENCE_END

# spaCy's English tokenizer (what datatrove's `split_into_words("en")` runs) re-run in plain `re`: the same
# special cases, prefix/suffix/infix and URL rules (data/_spacy_en.py), the same affix-stripping loop.
_PREFIX = re.compile(_spacy.PREFIX)
_SUFFIX = re.compile(_spacy.SUFFIX)
_INFIX = re.compile(_spacy.INFIX)
_URL = re.compile(_spacy.URL)
_SPECIAL = _spacy.SPECIAL_CASES
_PUNCT_CHARS = PUNCTUATION_SET


def split_words(text: str) -> list[str]:
    words: list[str] = []
    for chunk in text.split():
        if chunk.isalpha() and chunk not in _SPECIAL:  # the common case: a plain word, nothing to split
            words.append(chunk)
            continue
        tokens = _CHUNKS.get(chunk)
        if tokens is None:
            tokens = []
            _split_chunk(chunk, tokens)
            if len(tokens) > 1:
                tokens = _merge_special(tokens)
            if len(_CHUNKS) >= _CHUNK_CACHE:  # bounded: crawl text has an endless tail of odd chunks
                _CHUNKS.clear()
            _CHUNKS[chunk] = tokens
        words.extend(tokens)
    return words


# "word," "end." "(see" repeat across documents: splitting each distinct chunk once halves tokenisation time.
_CHUNKS: dict[str, list[str]] = {}
_CHUNK_CACHE = 500_000


_MERGEABLE = {k for k in _SPECIAL if not k.isalnum()}


def _merge_special(tokens: list[str]) -> list[str]:
    """spaCy re-joins affixes that spell a special case (emoticons like "):", "''", "c.") after splitting."""
    out, i = [], 0
    while i < len(tokens):
        for span in (3, 2):
            key = "".join(tokens[i : i + span])
            if i + span <= len(tokens) and key in _MERGEABLE:
                out.extend(_SPECIAL[key])
                i += span
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _split_chunk(string: str, out: list[str]) -> None:
    """spaCy's `Tokenizer._split_affixes` + `_attach_tokens` for one whitespace-free chunk."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last = -1
    while string and len(string) != last:
        if string in _SPECIAL:
            break
        last = len(string)
        pre = _PREFIX.search(string)
        pre_len = pre.end() if pre else 0
        if pre_len:
            minus_pre = string[pre_len:]
            if minus_pre and minus_pre in _SPECIAL:
                prefixes.append(string[:pre_len])
                string = minus_pre
                break
        suf = _SUFFIX.search(string[pre_len:])
        suf_len = (suf.end() - suf.start()) if suf else 0
        if suf_len:
            minus_suf = string[:-suf_len]
            if minus_suf and minus_suf in _SPECIAL:
                suffixes.append(string[-suf_len:])
                string = minus_suf
                break
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            prefixes.append(string[:pre_len])
            suffixes.append(string[-suf_len:])
            string = string[pre_len:-suf_len]
        elif pre_len:
            prefixes.append(string[:pre_len])
            string = string[pre_len:]
        elif suf_len:
            suffixes.append(string[-suf_len:])
            string = string[:-suf_len]
        if string and string in _SPECIAL:
            break
    out.extend(prefixes)
    if string:
        if string in _SPECIAL:
            out.extend(_SPECIAL[string])
        elif _URL.match(string):
            out.append(string)
        else:
            start = 0
            for m in _INFIX.finditer(string):
                if m.start() == 0 and m.end() == 0:
                    continue
                if m.start() != start:
                    out.append(string[start : m.start()])
                if m.start() != m.end():
                    out.append(string[m.start() : m.end()])
                start = m.end()
            if start < len(string):
                out.append(string[start:])
    out.extend(reversed(suffixes))


def is_symbol(word: str) -> bool:
    """True when every character is punctuation (Gopher's "symbol word")."""
    return all(ch in _PUNCT_CHARS for ch in word)


def count_sentences(line: str) -> int:
    """Sentences in one line the way spaCy's Sentencizer counts them: a new sentence starts at the first
    non-punctuation token after a sentence-ending mark."""
    count, seen_end = 0, False
    for tok in split_words(line):
        if tok in SENTENCE_END:
            seen_end = True
        elif seen_end and not _is_punct_token(tok):
            count, seen_end = count + 1, False
    return count + 1 if line.strip() else 0


def _is_punct_token(tok: str) -> bool:
    import unicodedata

    return all(unicodedata.category(ch).startswith("P") for ch in tok)


