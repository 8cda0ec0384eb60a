"""Parity with datatrove: megalang's web chain (Gopher repetition → Gopher quality → C4 → FineWeb, FineWeb's order
and settings) makes the same keep/drop decisions, for the same reasons, as datatrove's filters on a prose corpus."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import pytest

from megalang.data.quality import KindFilters
from megalang.data.words import split_words

datatrove = pytest.importorskip("datatrove")
pytest.importorskip("spacy")

# datatrove's reasons → ours (the filter names differ, the rules are the same).
FILTER_NAMES = {"👯 Gopher Repetition": "gopher_repetition", "🥇 Gopher Quality": "gopher_quality",
                "⛰ C4 Quality": "c4", "🍷 FineWeb Quality": "fineweb"}
REASONS = {"gopher_short_doc": "short_doc", "gopher_long_doc": "long_doc",
           "gopher_below_avg_threshold": "below_avg_word_length", "gopher_above_avg_threshold": "above_avg_word_length",
           "gopher_too_many_hashes": "too_many_hashes", "gopher_too_many_ellipsis": "too_many_ellipsis",
           "gopher_too_many_bullets": "too_many_bullets", "gopher_too_many_end_ellipsis": "too_many_end_ellipsis",
           "gopher_below_alpha_threshold": "below_alpha_ratio", "gopher_enough_stop_words": "not_enough_stop_words"}


def prose_corpus(every: int = 2) -> list[str]:
    """Real English prose that ships with every Python: the language reference topics (in chunks of six
    paragraphs) and the long docstrings of the standard library. Every other document keeps the test quick."""
    from pydoc_data.topics import topics

    docs = []
    for key in sorted(topics):
        paragraphs = topics[key].split("\n\n")
        docs += ["\n\n".join(paragraphs[i : i + 6]).strip() for i in range(0, len(paragraphs), 6)]
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 400:
                    docs.append(doc)
    return [d for d in docs if d][::every]


def datatrove_decision(text: str, filters) -> tuple[str | None, str]:
    from datatrove.data import Document

    doc = Document(text=text, id="0")
    for flt in filters:
        result = flt.filter(doc)
        if result is not True:
            reason = result[1] if isinstance(result, tuple) else "dropped"
            return f"{FILTER_NAMES[flt.name]}:{REASONS.get(reason, reason)}", doc.text
    return None, doc.text


def test_web_filters_agree_with_datatrove_on_prose():
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False),
               FineWebQualityFilter()]
    ours = KindFilters.from_config({"web": ["gopher_repetition", "gopher_quality", "c4", "fineweb"]}, {})
    docs = prose_corpus()
    assert len(docs) > 400
    kept = 0
    differ = []  # (start of the document, datatrove's reason, ours); a reason of None means kept
    for text in docs:
        theirs_reason, theirs_text = datatrove_decision(text, filters)
        our_text, our_reason = ours.apply(text, "web")
        if theirs_reason != our_reason:  # a different decision, or the same drop for another reason
            differ.append((text[:60], theirs_reason, our_reason))
        elif theirs_reason is None:
            kept += 1
            assert our_text == theirs_text  # C4 removed the same lines
    assert kept > 50 and len(docs) - kept > 50  # both outcomes are exercised
    assert differ == []  # docs/data.md: decisions and reasons agree on 100 % of the documents


def test_words_match_spacy_tokens_on_prose():
    import spacy

    nlp = spacy.blank("en")
    docs = prose_corpus(every=16)
    differ = [d[:80] for d in docs if [t.text.strip() for t in nlp(d) if t.text.strip()] != split_words(d)]
    assert differ == []  # docs/data.md: 100 % identical token lists
