"""data/quality.py: every filter on a kept and a dropped case, kinds, and the filter chains per kind."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import pytest

from megalang.data.quality import (
    C4Lines,
    Features,
    FineWeb,
    GopherQuality,
    GopherRepetition,
    KindFilters,
    LowEntropy,
    Reject,
    infer_kind,
)
from megalang.data.words import count_sentences, split_words
from megalang.errors import UserError

# Real prose (~120 words, seven sentences): passes every web rule.
PROSE = (
    "The history of the printing press is a story of slow change and sudden leaps. In the middle of the fifteenth "
    "century, Johannes Gutenberg combined movable metal type with an oil-based ink and a screw press adapted from "
    "wine making. The result was not an instant revolution, but within fifty years printers had set up shops in "
    "more than two hundred cities across Europe. Books became cheaper, and the number of people who could read "
    "them grew with every decade. Scholars have argued about the size of that effect for a long time. Some say "
    "that the press made the Reformation possible; others point to the role of sermons and songs that were "
    "passed on by word of mouth. Either way, the world of ideas was never the same again."
)

HAMLET = "\n".join(
    ["HAMLET.", "To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer",
     "The slings and arrows of outrageous fortune,", "Or to take arms against a sea of troubles",
     "And by opposing end them.", "", "OPHELIA.", "Good my lord,", "How does your honour for this many a day?", "",
     "HAMLET.", "I humbly thank you; well, well, well.", "", "OPHELIA.",
     "My lord, I have remembrances of yours", "That I have longed long to re-deliver.", "I pray you, now receive them.",
     "", "HAMLET.", "No, not I, I never gave you aught.", "", "OPHELIA.",
     "My honour'd lord, you know right well you did,", "And with them words of so sweet breath compos'd",
     "As made the things more rich; their perfume lost,", "Take these again; for to the noble mind",
     "Rich gifts wax poor when givers prove unkind.", "There, my lord.", "", "HAMLET.", "Ha, ha! Are you honest?"]
)


def reason(flt, text):
    verdict = flt(Features(text))
    return verdict.reason if isinstance(verdict, Reject) else verdict


def test_words_follow_spacy_english_tokenisation():
    assert split_words("Hello, world... it's U.S. don't 3.5 $5 (see) Mr. Smith -- e-mail") == [
        "Hello", ",", "world", "...", "it", "'s", "U.S.", "do", "n't", "3.5", "$", "5", "(", "see", ")", "Mr.",
        "Smith", "--", "e", "-", "mail"]
    assert count_sentences("One. Two! Three? \"Four.\" Five") == 5
    assert count_sentences("   ") == 0


@pytest.mark.parametrize("text, expect", [
    (PROSE, None),
    ("Too short to be a real page, with the and of.", "short_doc"),
    (" ".join(["supercalifragilistic"] * 60) + " the of", "above_avg_word_length"),
    (" ".join(["a", "an", "is"] * 30) + " the of", "below_avg_word_length"),
    (PROSE + " #tag" * 20, "too_many_hashes"),
    ("\n".join(f"- item number {i} of the list and more words here" for i in range(12)), "too_many_bullets"),
    ("\n".join(f"then the story goes on and on {i}..." for i in range(12)), "too_many_ellipsis"),
    (" ".join(["apples pears cherries plums grow in orchards"] * 8) + ".", "not_enough_stop_words"),
    (PROSE + " " + " ".join(["1234", "$", "%", "&&", "42"] * 40), "below_alpha_ratio"),
])
def test_gopher_quality(text, expect):
    assert reason(GopherQuality(), text) == expect


@pytest.mark.parametrize("text, expect", [
    (PROSE, None),
    ("\n\n".join([PROSE[:200], "Repeat me.", "Repeat me.", "Repeat me.", "Once."]), "dup_para_frac"),
    (PROSE.replace(". ", ".\n") + "\n" + PROSE[:300] + "\n" + PROSE[:300], "dup_line_char_frac"),
    (PROSE + " " + " ".join(["buy now"] * 40), "top_2_gram"),
    (PROSE + " " + "all work and no play makes jack a dull boy " * 8, "duplicated_5_n_grams"),
])
def test_gopher_repetition(text, expect):
    assert reason(GopherRepetition(), text) == expect


def test_c4_drops_lines_and_keeps_the_page_or_rejects_it():
    page = PROSE.replace(". ", ".\n") + "\nThis site uses cookies to track you around.\nShort line\nEnable JavaScript to view it properly."
    verdict = C4Lines()(Features(page))
    assert isinstance(verdict, str) and "cookies" not in verdict and "JavaScript" not in verdict and "Short line" not in verdict
    assert verdict.startswith("The history of the printing press")
    assert reason(C4Lines(), PROSE.replace(". ", ".\n")) is None  # nothing to drop: the text is kept as is
    assert reason(C4Lines(), PROSE + "\nLorem ipsum dolor sit amet, consectetur.") == "lorem_ipsum"
    assert reason(C4Lines(), PROSE + "\nfunction f() { return 1; } is code here.") == "curly_bracket"
    assert reason(C4Lines(), "One sentence only. And a second one here.") == "too_few_sentences"


@pytest.mark.parametrize("text, expect", [
    (PROSE.replace(". ", ".\n"), None),
    ("\n".join(["a heading without punctuation here"] * 1 + [f"menu entry {i} without a stop" for i in range(10)]), "line_punct_ratio"),
    ("\n".join(f"Short {i}." for i in range(20)), "short_line_ratio"),
    (PROSE.replace(". ", ".\n") + "\n" + PROSE.split(". ")[0] + ".", "char_dup_ratio"),
])
def test_fineweb(text, expect):
    assert reason(FineWeb(), text) == expect


def test_low_entropy_drops_degenerate_text_only():
    assert reason(LowEntropy(), PROSE) is None
    assert reason(LowEntropy(), "a" * 500) == "low_char_entropy"
    assert reason(LowEntropy(), "0101 " * 200) == "low_char_entropy"
    rng = random.Random(0)
    block = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(300))
    assert reason(LowEntropy(), block * 40) == "high_compression"
    code = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    assert reason(LowEntropy(), code) is None


def test_kinds_are_inferred_from_the_file_type_and_overridable():
    assert infer_kind("/data/src/module.py") == "code"
    assert infer_kind("/data/gutenberg/hamlet.txt") == "books"
    assert infer_kind("/data/crawl/part-0.jsonl.zst") == "web"
    assert infer_kind("/data/crawl/part-0.jsonl", {"crawl/*": "chat"}) == "chat"
    assert infer_kind("/data/x.txt", default="web") == "web"


def test_web_rules_would_drop_plays_and_code_but_their_kinds_keep_them():
    filters = KindFilters.from_config({}, {})
    play = "\n".join([HAMLET] * 2)
    code = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text()
    assert filters.apply(play, "web")[1] is not None
    assert filters.apply(code, "web")[1] is not None
    assert filters.apply(play, "books") == (play, None)
    assert filters.apply(code, "code") == (code, None)
    assert filters.apply(PROSE, "web") == (PROSE, None)


def test_filter_chains_and_params_are_configurable_and_checked():
    filters = KindFilters.from_config({"web": ["gopher_quality"]}, {"gopher_quality": {"min_doc_words": 5}})
    assert filters.apply("Too short to be a real page, with the and of.", "web")[1] is None
    with pytest.raises(UserError, match="quality_filters.web: unknown filter.*nope"):
        KindFilters.from_config({"web": ["nope"]}, {})
    with pytest.raises(UserError, match="quality_params.c4: unknown parameter.*bogus"):
        KindFilters.from_config({}, {"c4": {"bogus": 1}})
