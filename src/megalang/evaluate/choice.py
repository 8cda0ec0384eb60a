"""`megalang eval choice`: MMLU/ARC-style multiple choice scored by log-likelihood, as lm-eval scores it.

Each choice is the continuation `" " + choice` of the prompt (lm-eval's `target_delimiter`); `acc` takes
the argmax of the summed log-likelihoods, `acc_norm` divides by the choice's length in characters and
`acc_bytes` by its length in UTF-8 bytes (lm-eval's definitions, ties going to the first choice).
"""

from __future__ import annotations

import string
from collections import defaultdict
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from megalang.errors import UserError
from megalang.evaluate.common import CHOICE, load_scorer, read_jsonl, result_header, write_result

LETTERS = string.ascii_uppercase
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
Format = Literal["arc", "mmlu"]


@dataclass
class ChoiceItem:
    question: str
    choices: list[str]
    gold: int
    subject: str | None = None
    line: int | None = None


def parse_items(records: list[dict[str, Any]], source: str) -> list[ChoiceItem]:
    """Validated items; a bad answer or empty choice list names its line."""
    return [parse_item(r, f"{source}:{r.get('_line', i + 1)}") for i, r in enumerate(records)]


def parse_item(r: dict[str, Any], where: str) -> ChoiceItem:
    choices = r["choices"]
    if not isinstance(choices, list) or not choices:
        raise UserError(f"{where}: 'choices' must be a non-empty list of strings")
    if not all(isinstance(c, str) and c.strip() for c in choices):
        raise UserError(f"{where}: every choice must be a non-empty string")
    if not isinstance(r["question"], str):
        raise UserError(f"{where}: 'question' must be a string")
    return ChoiceItem(r["question"], choices, parse_answer(r["answer"], len(choices), where), r.get("subject"), r.get("_line"))


def parse_answer(answer: Any, n: int, where: str) -> int:
    """An index (0-based) or a letter (A = first choice)."""
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise UserError(f"{where}: 'answer' must be a choice index or a letter, got {answer!r}")
    if isinstance(answer, str):
        letter = answer.strip().upper()
        if len(letter) != 1 or letter not in LETTERS:
            raise UserError(f"{where}: 'answer' {answer!r} is not a letter (A, B, ...) or an index")
        index = LETTERS.index(letter)
    else:
        index = answer
    if not 0 <= index < n:
        raise UserError(f"{where}: 'answer' {answer!r} is out of range for {n} choices (0..{n - 1} or A..{LETTERS[n - 1]})")
    return index


# --- prompts ----------------------------------------------------------------------------------------


def item_text(item: ChoiceItem, fmt: Format) -> str:
    """The prompt of one item: ARC style ("Question: …\\nAnswer:") or MMLU style with lettered options."""
    if fmt == "mmlu":
        options = "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
        return f"{item.question.strip()}{options}\nAnswer:"
    return f"Question: {item.question}\nAnswer:"


def item_choices(item: ChoiceItem, fmt: Format) -> list[str]:
    return list(LETTERS[: len(item.choices)]) if fmt == "mmlu" else item.choices


def context_for(item: ChoiceItem, fmt: Format, shots: list[ChoiceItem]) -> str:
    """lm-eval's few-shot context: [description] + solved examples joined by a blank line + the prompt."""
    description = ""
    if fmt == "mmlu" and item.subject:
        description = f"The following are multiple choice questions (with answers) about {item.subject.replace('_', ' ')}.\n\n"
    solved = [item_text(s, fmt) + TARGET_DELIMITER + item_choices(s, fmt)[s.gold] for s in shots]
    return description + "".join(x + FEWSHOT_DELIMITER for x in solved) + item_text(item, fmt)


def pick_shots(item: ChoiceItem, pool: list[ChoiceItem], k: int) -> list[ChoiceItem]:
    """The first k pool items of the item's subject (all subjects when the item has none), never the item itself."""
    same = [p for p in pool if p is not item and p.question != item.question and (item.subject is None or p.subject == item.subject)]
    return same[:k]


# --- metrics ----------------------------------------------------------------------------------------


def choice_predictions(lls: list[float], choices: list[str]) -> dict[str, int]:
    """argmax of raw, per-character and per-byte log-likelihoods (np.argmax: the first maximum wins)."""
    ll = np.asarray(lls, dtype=np.float64)
    chars = np.array([float(len(c)) for c in choices])
    nbytes = np.array([float(len(c.encode("utf-8"))) for c in choices])
    return {"pred": int(np.argmax(ll)), "pred_norm": int(np.argmax(ll / chars)), "pred_bytes": int(np.argmax(ll / nbytes))}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    n = len(rows)
    return {
        "acc": sum(r["pred"] == r["gold"] for r in rows) / n,
        "acc_norm": sum(r["pred_norm"] == r["gold"] for r in rows) / n,
        "acc_bytes": sum(r["pred_bytes"] == r["gold"] for r in rows) / n,
        "n": n,
    }


def by_subject(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("subject") is not None:
            groups[r["subject"]].append(r)
    return {s: aggregate(g) for s, g in sorted(groups.items())}


# --- scoring ----------------------------------------------------------------------------------------


def score_items(scorer, items: list[ChoiceItem], fmt: Format = "arc", shots: list[ChoiceItem] | None = None, num_fewshot: int = 0) -> list[dict[str, Any]]:
    """One row per item: its loglikelihoods (one per choice, in order), predictions and gold."""
    requests, spans = [], []
    for item in items:
        ctx = context_for(item, fmt, pick_shots(item, shots or [], num_fewshot) if num_fewshot else [])
        conts = item_choices(item, fmt)
        spans.append((len(requests), len(conts)))
        requests += [(ctx, TARGET_DELIMITER + c) for c in conts]
    scored = scorer.loglikelihood(requests)
    rows = []
    for item, (start, n) in zip(items, spans, strict=True):
        lls = [ll for ll, _ in scored[start : start + n]]
        row = {"line": item.line, "loglikelihoods": lls, **choice_predictions(lls, item_choices(item, fmt)), "gold": item.gold}
        if item.subject is not None:
            row["subject"] = item.subject
        rows.append(row)
    return rows


def evaluate_choice(
    model: str,
    data: str,
    out: str | None = None,
    fmt: Format = "arc",
    fewshot: str | None = None,
    num_fewshot: int = 0,
    batch_size: int = 16,
    limit: int | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """`megalang eval choice`: load, score, write the result JSON (metrics, per subject, per item)."""
    if fmt not in ("arc", "mmlu"):
        raise UserError(f"--format {fmt}: expected arc or mmlu")
    if num_fewshot < 0 or (num_fewshot and not fewshot):
        raise UserError("--num-fewshot needs --fewshot FILE (a JSONL set of solved examples) and must be >= 0")
    items = load_items(data, limit)
    shots = load_items(fewshot, None) if fewshot else []
    _, scorer = load_scorer(model, batch_size, backend=backend)
    with closing(scorer):
        rows = score_items(scorer, items, fmt, shots, num_fewshot)
    settings = {"format": fmt, "fewshot": fewshot, "num_fewshot": num_fewshot, "batch_size": batch_size, "limit": limit}
    result = {**result_header("choice", model, data, settings), **aggregate(rows), "subjects": by_subject(rows), "items": rows}
    return write_result(out, result)


def load_items(path: str, limit: int | None) -> list[ChoiceItem]:
    items = parse_items(read_jsonl(path, CHOICE), str(path))
    return items[:limit] if limit else items
