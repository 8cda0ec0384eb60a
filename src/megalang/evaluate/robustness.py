"""`megalang eval robustness`: accuracy on a choice or classify set before and after seeded perturbations
(cheap smoke checks; `--attack` runs TextAttack's searched attacks instead, evaluate/attack.py).

Each perturbation touches each eligible character with probability `rate`,
drawn from a generator seeded by (seed, perturbation, line), so a result is reproducible and does not
depend on item order or on which other perturbations run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from megalang.errors import UserError
from megalang.evaluate import choice as choice_eval
from megalang.evaluate import classify as classify_eval
from megalang.evaluate.common import (
    CHOICE,
    CLASSIFY,
    check_schema,
    load_scorer,
    read_jsonl,
    result_header,
    write_result,
)

# QWERTY neighbours: the typos a hurried typist makes.
KEYBOARD = {
    "q": "wa", "w": "qes", "e": "wrd", "r": "etf", "t": "ryg", "y": "tuh", "u": "yij", "i": "uok", "o": "ipl",
    "p": "o", "a": "qsz", "s": "awdz", "d": "sefx", "f": "drgc", "g": "fthv", "h": "gyjb", "j": "hukn",
    "k": "jilm", "l": "ko", "z": "asx", "x": "zsdc", "c": "xdfv", "v": "cfgb", "b": "vghn", "n": "bhjm", "m": "njk",
}
def _chars(text: str, rate: float, rng: random.Random, edit: Callable[[str, str, random.Random], str]) -> str:
    """Apply `edit(char, next_char, rng)` to each letter with probability `rate`."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isalpha() and rng.random() < rate:
            nxt = text[i + 1] if i + 1 < len(text) else ""
            out.append(edit(c, nxt, rng))
            i += 2 if edit is _swap and nxt.isalpha() else 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _swap(c: str, nxt: str, rng: random.Random) -> str:
    return nxt + c if nxt.isalpha() else c


def _delete(c: str, nxt: str, rng: random.Random) -> str:
    return ""


def _case(c: str, nxt: str, rng: random.Random) -> str:
    return c.swapcase()


def _keyboard(c: str, nxt: str, rng: random.Random) -> str:
    near = KEYBOARD.get(c.lower())
    if not near:
        return c
    typo = rng.choice(near)
    return typo.upper() if c.isupper() else typo


def _whitespace(text: str, rate: float, rng: random.Random) -> str:
    """Double a space, or drop it (joining two words), each with probability rate/2 per space."""
    out = []
    for c in text:
        if c == " ":
            r = rng.random()
            out.append("  " if r < rate / 2 else "" if r < rate else " ")
        else:
            out.append(c)
    return "".join(out)


PERTURBATIONS: dict[str, Callable[[str, float, random.Random], str]] = {
    "swap": lambda t, r, g: _chars(t, r, g, _swap),
    "delete": lambda t, r, g: _chars(t, r, g, _delete),
    "case": lambda t, r, g: _chars(t, r, g, _case),
    "keyboard": lambda t, r, g: _chars(t, r, g, _keyboard),
    "whitespace": _whitespace,
}
# The hand-written synonym list this command once had is replaced by TextAttack's attacks (issue #19).
RETIRED = {"synonym": "the hand-written synonym list was replaced by TextAttack attacks; use --attack deepwordbug, pruthi or word-deletion"}


def perturb(text: str, kind: str, rate: float, seed: int, line: int) -> str:
    if kind in RETIRED:
        raise UserError(f"--perturbation {kind}: {RETIRED[kind]}")
    if kind not in PERTURBATIONS:
        raise UserError(f"--perturbations {kind}: unknown; choose from {', '.join(PERTURBATIONS)}")
    # str seeds are hashed with SHA-512 by `random`, so this is stable across processes (unlike hash()).
    return PERTURBATIONS[kind](text, rate, random.Random(f"{seed}:{kind}:{line}"))


# --- evaluation -------------------------------------------------------------------------------------


def evaluate_robustness(
    model: str,
    data: str,
    out: str | None = None,
    perturbations: list[str] | None = None,
    rate: float = 0.1,
    seed: int = 0,
    verbalizer: str | None = None,
    fmt: choice_eval.Format = "arc",
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, Any]:
    """Clean accuracy, accuracy under each perturbation, and the drop (clean − perturbed)."""
    kinds = perturbations or list(PERTURBATIONS)
    for k in kinds:
        perturb("", k, rate, seed, 0)
    if not 0 < rate <= 1:
        raise UserError(f"--rate {rate}: must be in (0, 1]")
    schema = detect_schema(data)
    records = read_jsonl(data, schema)[: limit or None]
    _, scorer = load_scorer(model, batch_size)
    accuracy = _choice_accuracy if schema is CHOICE else _classify_accuracy
    score = accuracy(scorer, records, str(data), verbalizer, fmt)
    clean = score(lambda text, line: text)
    results = {}
    for k in kinds:
        acc = score(lambda text, line, k=k: perturb(text, k, rate, seed, line))
        results[k] = {"accuracy": acc, "drop": clean - acc}
    settings = {"perturbations": kinds, "rate": rate, "seed": seed, "task": schema.name, "format": fmt, "limit": limit}
    worst = max(results.values(), key=lambda r: r["drop"])
    result = {**result_header("robustness", model, data, settings), "clean_accuracy": clean, "perturbed": results, "max_drop": worst["drop"], "n": len(records)}
    return write_result(out, result)


def detect_schema(data: str):
    """A choice set or a classify set, by the first record's keys (each line is then checked against it)."""
    first = read_jsonl(data, None)[0]
    for schema in (CHOICE, CLASSIFY):
        if set(schema.required) <= set(first):
            return schema
    check_schema(first, CHOICE, f"{data}:{first['_line']}")
    raise AssertionError("unreachable: check_schema raises")


def _choice_accuracy(scorer, records, source, verbalizer, fmt):
    items = choice_eval.parse_items(records, source)

    def score(edit) -> float:
        perturbed = [choice_eval.ChoiceItem(edit(i.question, i.line), i.choices, i.gold, i.subject, i.line) for i in items]
        rows = choice_eval.score_items(scorer, perturbed, fmt)
        return choice_eval.aggregate(rows)["acc"]

    return score


def _classify_accuracy(scorer, records, source, verbalizer, fmt):
    mapping = classify_eval.parse_verbalizer(verbalizer, sorted({str(r["label"]) for r in records}) if not verbalizer else None)
    classify_eval.check_labels(records, mapping, source)

    def score(edit) -> float:
        perturbed = [{**r, "text": edit(r["text"], r["_line"])} for r in records]
        rows = classify_eval.score_records(scorer, perturbed, mapping, classify_eval.DEFAULT_TEMPLATE)
        return sum(r["pred"] == r["gold"] for r in rows) / len(rows)

    return score
