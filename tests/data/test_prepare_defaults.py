"""`megalang data prepare` with no flags cleans a mixed corpus: every document gets its source kind's default chain
(config/data.py DEFAULT_STEPS; quality rules, scrub list and near-dedup chosen per kind). Crawled pages lose their
exact and near copies, their junk and their PII; a Project Gutenberg book loses only its licence header and footer;
real source code (two stdlib modules) loses only an author's email address."""

from __future__ import annotations

import ast
import json
import random
import sysconfig
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from megalang.cli import app
from megalang.config import CODE_SCRUB, DEFAULT_STEPS, SECURITY_SCRUB, PrepareConfig
from megalang.data.gutenberg import strip_gutenberg
from megalang.data.quality import DEFAULT_KIND_FILTERS

STDLIB = Path(sysconfig.get_paths()["stdlib"])

# Crawled pages: ordinary prose, two paragraphs (lines) each, that passes the web rules unchanged.
PAGES = [
    ("The old harbour town grew up around a single stone quay that fishermen built in the twelfth century. For "
     "hundreds of years the boats went out before dawn and came back in the afternoon, and the market on the quay "
     "sold whatever the sea had given that day. When the railway arrived in 1862, the catch could reach the city "
     "by evening, and the town doubled in size within a generation.\n"
     "Today only a handful of boats still work from the quay. Most of the old net lofts have become cafes and "
     "small galleries, and the fish market opens on Saturdays for visitors. The harbour master still keeps a "
     "logbook of every vessel that enters, a habit that has not been broken since the first entry was made."),

    ("Sourdough bread is made with a culture of wild yeast and lactic acid bacteria instead of packaged yeast. The "
     "culture, often called a starter, is a simple mixture of flour and water that is fed every day until it "
     "bubbles and smells pleasantly sour. Bakers keep their starters for years, and some claim that theirs are "
     "older than the bakery itself.\n"
     "The long fermentation gives the bread its open crumb and tangy flavour. It also breaks down part of the "
     "gluten and the starches, which is why some people find sourdough easier to digest. A loaf takes about a "
     "day from mixing to baking, but most of that time the dough simply rests in a cool place."),

    ("Honey bees communicate the location of food with a movement known as the waggle dance. A forager that has "
     "found a rich patch of flowers returns to the hive and runs in a straight line while shaking her body, then "
     "loops back and repeats the run. The angle of the run against the vertical comb tells the other bees the "
     "direction of the flowers relative to the sun.\n"
     "The length of each waggle run encodes the distance to the food. Karl von Frisch decoded the dance in the "
     "1940s and later shared a Nobel Prize for the work. Researchers have since shown that bees adjust the angle "
     "through the day to account for the movement of the sun across the sky."),

    ("A suspension bridge carries its deck on vertical hangers that hang from two main cables. The cables pass over "
     "tall towers and are anchored in massive blocks of concrete at each end, so most of the load ends up in the "
     "ground rather than in the deck. This design lets engineers span distances that no beam or arch could cross "
     "with the materials of the time.\n"
     "Wind was the great enemy of early suspension bridges. The collapse of the Tacoma Narrows Bridge in 1940 "
     "showed that a deck which is too thin and flexible can start to twist in a steady breeze. Modern decks are "
     "stiffened trusses or shaped boxes that let the air flow around them without building up motion."),

    ("Composting turns kitchen scraps and garden waste into a dark, crumbly material that improves almost any soil. "
     "The work is done by bacteria, fungi and small animals such as worms, which need air, water and a balance of "
     "green and brown material. Grass clippings and vegetable peelings provide nitrogen, while dry leaves and "
     "cardboard provide carbon.\n"
     "A well built heap warms up quickly as the microbes multiply, and the heat kills most weed seeds. Turning "
     "the heap every few weeks brings fresh air to the centre and speeds the process along. After a few months "
     "the finished compost can be spread on beds or mixed into potting soil for containers."),
]

# The same kind of page with personal data in it: kept, with the data replaced by placeholders.
PII_PAGES = [
    ("Our reading group meets on the first Tuesday of every month in the back room of the public library. We "
     "are reading a novel by a different author each season, and new members are always welcome to join us. "
     "If you would like to receive the reading list, write to margaret.hollis@example.org and she will add you "
     "to the mailing list. You can also call her on (415) 555-0134 in the evenings. The library has a few spare "
     "copies of each book for members who cannot buy their own."),

    ("The school network was slow for most of the week, and the technicians finally traced the problem to a "
     "misconfigured switch in the science block. The faulty device had the address 198.51.100.23 and was "
     "sending the same packets around a loop. After it was replaced, the speed of the connection went back to "
     "normal in every classroom. The head teacher thanked the staff for their patience and asked them to report "
     "any further problems to the office as soon as they notice them. A new switch has been ordered as a spare."),
]
PII = ["margaret.hollis@example.org", "(415) 555-0134", "198.51.100.23"]


def near_copy(text: str, changes: dict[str, str]) -> str:
    """The text with a few words changed, as a re-published page would have them."""
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new, 1)
    return text


NEAR_COPIES = [
    near_copy(PAGES[0], {"twelfth": "thirteenth", "doubled": "tripled", "Saturdays": "Sundays"}),
    near_copy(PAGES[1], {"for years": "for decades", "about a": "roughly one", "cool": "cold"}),
]


def gibberish(seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(3, 9))) for _ in range(120))


JUNK = {
    "boilerplate": "Home\nAbout us\nProducts\nContact\nPrivacy policy\nThis website uses cookies to improve your "
                   "experience.\nAccept all cookies\nCopyright 2024 Example Corp. All rights reserved.",
    "gibberish": gibberish(),
    "very short": "Click here to subscribe!",
    "symbol-heavy": " ".join(["### BIG SALE ### #deals #discount #free #winner #today $$$ !!! >>> click <<<"] * 8),
}

BOOK_BODY = """HAMLET, PRINCE OF DENMARK

by William Shakespeare

ACT III. SCENE I. A room in the Castle.

HAMLET.
To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles,
And by opposing end them? To die--to sleep,
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to: 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep, perchance to dream--ay, there's the rub:
For in that sleep of death what dreams may come,
When we have shuffled off this mortal coil,
Must give us pause--there's the respect
That makes calamity of so long life.

OPHELIA.
Good my lord,
How does your honour for this many a day?

HAMLET.
I humbly thank you; well, well, well.

OPHELIA.
My lord, I have remembrances of yours
That I have longed long to re-deliver.
I pray you, now receive them."""

BOOK = f"""The Project Gutenberg eBook of Hamlet, Prince of Denmark

This ebook is for the use of anyone anywhere in the United States and
most other parts of the world at no cost and with almost no restrictions
whatsoever. You may copy it, give it away or re-use it under the terms
of the Project Gutenberg License included with this ebook or online
at www.gutenberg.org.

Title: Hamlet, Prince of Denmark

Author: William Shakespeare

Release date: November 1, 1998 [eBook #1524]

Language: English

*** START OF THE PROJECT GUTENBERG EBOOK HAMLET, PRINCE OF DENMARK ***




{BOOK_BODY}




*** END OF THE PROJECT GUTENBERG EBOOK HAMLET, PRINCE OF DENMARK ***

Updated editions will replace the previous one--the old editions will
be renamed.

The Foundation's business office is located at 809 North 1500 West,
Salt Lake City, UT 84116, (801) 596-1887. Email contact links and up
to date contact information can be found at the Foundation's website
and official page at www.gutenberg.org/contact, or write to
business@pglaf.org.
"""


def write_corpus(root: Path) -> Path:
    """crawl/ (web: pages, PII pages, junk; then a second file of exact and near copies), books/ (a Gutenberg
    e-text), src/ (two stdlib modules: one with an author's email, one full of IP address constants)."""
    (root / "crawl").mkdir(parents=True)
    first = PAGES + PII_PAGES + list(JUNK.values())
    second = [PAGES[2], PAGES[3] + "\n", *NEAR_COPIES]  # the trailing newline goes in normalisation: an exact copy
    for name, texts in (("pages-0.jsonl", first), ("pages-1.jsonl", second)):
        with open(root / "crawl" / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": text, "url": f"https://www.example.com/{name}/{i}"}) + "\n"
                         for i, text in enumerate(texts))
    (root / "books").mkdir()
    (root / "books" / "pg1524.txt").write_text(BOOK, encoding="utf-8")
    (root / "src").mkdir()
    for module in ("textwrap.py", "ipaddress.py"):
        (root / "src" / module).write_text((STDLIB / module).read_text(encoding="utf-8"), encoding="utf-8")
    return root


def read_prepared(out: Path) -> dict[str, list[tuple[str, str]]]:
    """kind → [(source file name, text)] of the prepared documents."""
    docs: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(out.glob("docs-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            docs.setdefault(row["kind"], []).append((Path(row["source"]).name, row["text"]))
    return docs


def test_prepare_with_no_flags_cleans_a_mixed_corpus_and_keeps_books_and_code(tmp_path):
    corpus, out = write_corpus(tmp_path / "corpus"), tmp_path / "out"
    result = CliRunner().invoke(app, ["data", "prepare", "-i", str(corpus), "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert manifest["config"]["steps"] == list(DEFAULT_STEPS)
    docs = read_prepared(out)
    assert set(docs) == {"web", "books", "code"}

    web = [text for _, text in docs["web"]]
    # Every page once: the originals win over their exact and near copies (first in corpus order).
    assert web[:5] == PAGES
    assert counts["removed_exact_dedup"] == 2 and counts["removed_near_dedup"] == 2
    assert not any(copy in web for copy in NEAR_COPIES)
    # Junk: every piece dropped by the web quality rules, for a quality reason.
    assert counts["removed_quality"] == len(JUNK)
    assert not any(junk in text for junk in JUNK.values() for text in web)
    reasons = {r["reason"].split(":")[0] for r in map(json.loads, (out / "rejected" / "quality.jsonl").open())}
    assert reasons <= {"gopher_repetition", "gopher_quality", "c4", "fineweb", "entropy"} and reasons
    # PII: kept pages, with placeholders where the personal data was.
    assert len(web) == len(PAGES) + len(PII_PAGES)
    assert not any(value in text for value in PII for text in web)
    assert "<EMAIL>" in web[5] and "<PHONE>" in web[5] and "<IPV4>" in web[6]
    assert manifest["scrubbed"] == {"EMAIL": 2, "IPV4": 1, "PHONE": 1}  # the code's one email is the second EMAIL

    # The book: exactly its text, Project Gutenberg's header and footer (with its address, phone, email) cut.
    assert docs["books"] == [("pg1524.txt", BOOK_BODY)]

    # The code: ipaddress.py byte for byte (its 92 address constants stay); textwrap.py loses only its author's
    # email, and still parses.
    code = dict(docs["code"])
    assert code["ipaddress.py"] == (STDLIB / "ipaddress.py").read_text(encoding="utf-8").strip()
    textwrap_src = (STDLIB / "textwrap.py").read_text(encoding="utf-8").strip()
    assert "gward@python.net" in textwrap_src
    assert code["textwrap.py"] == textwrap_src.replace("gward@python.net", "<EMAIL>")
    ast.parse(code["textwrap.py"])
    assert counts["documents_out"] == len(PAGES) + len(PII_PAGES) + 1 + 2


def test_steps_still_narrow_the_chain(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    result = CliRunner().invoke(app, ["data", "prepare", "-i", str(corpus), "-o", str(tmp_path / "out"),
                                      "--steps", "normalize,length,exact_dedup", "--workers", "1"])
    assert result.exit_code == 0, result.output
    docs = read_prepared(tmp_path / "out")
    web = [text for _, text in docs["web"]]
    assert all(junk in web for junk in JUNK.values() if len(junk) >= 16)  # no quality step
    assert all(copy in web for copy in NEAR_COPIES)  # no near_dedup step
    assert PII[0] in web[5]  # no scrub step
    assert docs["books"] == [("pg1524.txt", BOOK.strip())]


def test_security_records_are_not_near_deduplicated_by_default(tmp_path):
    """Two CVE-style records that differ in a few words are two facts: the security kind skips near-dedup (and
    the same records as web pages are merged, so the test would fail if near-dedup ran on them)."""
    from megalang.data.pipeline import prepare

    records = [near_copy(PAGES[4], {"Composting": f"Advisory {n}: composting"}) for n in (1, 2)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "advisories.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in records))
    kept = {}
    for kind in ("security", "web"):
        manifest = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / kind), kind=kind,
                                         workers=1, progress=False))
        kept[kind] = manifest["counts"]["documents_out"]
    assert kept == {"security": 2, "web": 1}


def test_scrub_defaults_per_kind_survive_setting_one_kind():
    cfg = PrepareConfig(inputs=["x"], out="y", scrub_by_kind={"web": ["EMAIL"]})
    assert cfg.scrub_by_kind == {"code": list(CODE_SCRUB), "security": list(SECURITY_SCRUB), "web": ["EMAIL"]}
    cfg = PrepareConfig(inputs=["x"], out="y", scrub_by_kind={"code": ["EMAIL", "IPV4"]})
    assert cfg.scrub_by_kind["code"] == ["EMAIL", "IPV4"]


@pytest.mark.parametrize("kind", sorted(DEFAULT_KIND_FILTERS))
def test_the_cli_help_names_each_kinds_quality_rules(kind):
    """The per-kind table in `data prepare --help` lists the filters data/quality.py runs, in order."""
    result = CliRunner().invoke(app, ["data", "prepare", "--help"])
    line = next(line.strip() for line in result.output.splitlines() if line.strip().startswith(kind + " "))
    names = line[len(kind):].replace(";", ",").replace("(", ",").split(",")
    listed = [n.strip() for n in names if n.strip() in DEFAULT_KIND_FILTERS[kind]]
    assert listed == DEFAULT_KIND_FILTERS[kind]


def test_gutenberg_markers_old_and_new():
    old = ("The Project Gutenberg EBook of Poems\n\n*** START OF THIS PROJECT GUTENBERG EBOOK POEMS ***\n\nA verse.\n"
           "End of the Project Gutenberg EBook of Poems\n\n*** END OF THIS PROJECT GUTENBERG EBOOK POEMS ***\nlicence")
    assert strip_gutenberg(old) == "A verse."
    assert strip_gutenberg("No markers at all.\nJust text.") == "No markers at all.\nJust text."
    assert strip_gutenberg("Text.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence") == "Text."
    small_print = ("*** START OF THE PROJECT GUTENBERG EBOOK X ***\nThe small print notice.\n"
                   "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nThe book.\n"
                   "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n*** START OF THE PROJECT GUTENBERG EBOOK Y ***\nmore")
    assert strip_gutenberg(small_print) == "The book."  # the last start marker before the first end marker
