"""Project Gutenberg's boilerplate: the licence header and footer every Gutenberg e-text carries, cut off so that a
book keeps only its own text (the first filter of the `books` chain, data/quality.py).

The markers are the ones Gutenberg has used since the 1990s (`*** START OF THE PROJECT GUTENBERG EBOOK …`,
`*** END OF THIS PROJECT GUTENBERG EBOOK …`, `End of the Project Gutenberg EBook of …`, the old `*END*THE SMALL
PRINT!` line), as the `gutenberg` package's `strip_headers` recognises them. The boilerplate is the same ~3 000
words of licence in every book, with the Foundation's address, telephone number and email: left in, it is repeated
text, PII for the scrub step and shared 5-grams for near-dedup. A text with neither marker is returned unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A marker is a whole line; asterisks and case vary between decades of e-texts.
_START = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*"
    r"|\*END\*THE SMALL PRINT!.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK\b.*"
    r"|End of (?:the )?Project Gutenberg(?:'s)?\b.*)$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str) -> str:
    """The text between the first end marker and the last start marker before it, stripped; either side is
    kept when its marker is missing, and a text with neither is returned as it is."""
    end_match = _END.search(text)
    end = end_match.start() if end_match else len(text)
    # The last start marker: old e-texts have a "small print" notice after the first one.
    start = max((m.end() for m in _START.finditer(text, 0, end)), default=0)
    if start == 0 and end_match is None:
        return text
    return text[start:end].strip()


@dataclass
class GutenbergBoilerplate:
    """Quality filter (`gutenberg`): keeps the book with Project Gutenberg's header and footer removed; never drops.

    Duck-typed to data/quality.py's filter protocol (it reads `features.text` and returns None for unchanged or
    the new text), so this module needs nothing from quality.py; a dataclass without parameters, like the others."""

    name = "gutenberg"

    def __call__(self, features) -> str | None:
        text = features.text
        stripped = strip_gutenberg(text)
        return None if stripped == text else stripped
