"""`megalang eval classify`: GLUE-style classification by scoring each label's verbaliser word.

The prompt is a template over the record's text; each label is the continuation `" " + verbaliser[label]`
and the prediction is the label with the highest log-likelihood (the harness's way of scoring GLUE).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.evaluate.common import CLASSIFY, load_scorer, read_jsonl, result_header, write_result

DEFAULT_TEMPLATE = "{text}\nLabel:"


def parse_verbalizer(spec: str | None, labels: list[str] | None = None) -> dict[str, str]:
    """A verbaliser from a JSON file ({"label": "word"}), inline `label=word,label=word`, or plain labels."""
    if spec and Path(spec).is_file():
        try:
            mapping = json.loads(Path(spec).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{spec}: verbaliser is not valid JSON ({e})") from None
        if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise UserError(f"{spec}: verbaliser must be a JSON object of label → word strings")
    elif spec:
        mapping = {}
        for part in spec.split(","):
            label, sep, word = part.partition("=")
            mapping[label.strip()] = word.strip() if sep else label.strip()
    elif labels:
        mapping = {label: label for label in labels}
    else:
        raise UserError("--verbalizer: give a JSON file, label=word pairs, or a comma-separated label list")
    if len(mapping) < 2 or any(not k or not v.strip() for k, v in mapping.items()):
        raise UserError(f"--verbalizer {spec}: needs at least two labels, each with a non-empty word")
    return mapping


def check_labels(records: list[dict[str, Any]], verbalizer: dict[str, str], source: str) -> None:
    for r in records:
        if not isinstance(r["text"], str):
            raise UserError(f"{source}:{r['_line']}: 'text' must be a string")
        if str(r["label"]) not in verbalizer:
            raise UserError(
                f"{source}:{r['_line']}: label {r['label']!r} is not in the verbaliser ({', '.join(verbalizer)}); "
                "add it to --verbalizer or fix the record"
            )


# --- metrics ----------------------------------------------------------------------------------------


def confusion_matrix(gold: list[int], pred: list[int], n: int) -> list[list[int]]:
    """Rows: gold label, columns: predicted label."""
    m = [[0] * n for _ in range(n)]
    for g, p in zip(gold, pred, strict=True):
        m[g][p] += 1
    return m


def macro_f1(matrix: list[list[int]]) -> float:
    """Unweighted mean of per-label F1 over labels that occur as gold or prediction (scikit-learn's
    `f1_score(average="macro")` with labels = those present; a label never predicted nor gold is skipped)."""
    n = len(matrix)
    scores = []
    for k in range(n):
        tp = matrix[k][k]
        fp = sum(matrix[g][k] for g in range(n)) - tp
        fn = sum(matrix[k]) - tp
        if tp + fp + fn == 0:
            continue
        scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


def classification_metrics(gold: list[int], pred: list[int], labels: list[str]) -> dict[str, Any]:
    matrix = confusion_matrix(gold, pred, len(labels))
    return {
        "accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold),
        "macro_f1": macro_f1(matrix),
        "labels": labels,
        "confusion_matrix": matrix,
        "n": len(gold),
    }


# --- scoring ----------------------------------------------------------------------------------------


def score_records(scorer, records: list[dict[str, Any]], verbalizer: dict[str, str], template: str) -> list[dict[str, Any]]:
    labels = list(verbalizer)
    requests = []
    for r in records:
        ctx = render(template, r["text"])
        requests += [(ctx, " " + verbalizer[label]) for label in labels]
    scored = scorer.loglikelihood(requests)
    rows = []
    for i, r in enumerate(records):
        lls = [ll for ll, _ in scored[i * len(labels) : (i + 1) * len(labels)]]
        pred = max(range(len(labels)), key=lambda k: (lls[k], -k))  # first maximum wins, as np.argmax
        rows.append({"line": r["_line"], "loglikelihoods": lls, "pred": labels[pred], "gold": str(r["label"])})
    return rows


def render(template: str, text: str) -> str:
    if "{text}" not in template:
        raise UserError(f"--template {template!r}: must contain {{text}}")
    return template.replace("{text}", text)


def summarize(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    index = {label: k for k, label in enumerate(labels)}
    return classification_metrics([index[r["gold"]] for r in rows], [index[r["pred"]] for r in rows], labels)


def evaluate_classify(
    model: str,
    data: str,
    verbalizer: str | None = None,
    out: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, Any]:
    """`megalang eval classify`: accuracy, macro-F1 and the confusion matrix, plus one row per record."""
    records = read_jsonl(data, CLASSIFY)[: limit or None]
    mapping = parse_verbalizer(verbalizer, sorted({str(r["label"]) for r in records}) if not verbalizer else None)
    check_labels(records, mapping, str(data))
    render(template, "")
    _, scorer = load_scorer(model, batch_size)
    rows = score_records(scorer, records, mapping, template)
    settings = {"verbalizer": mapping, "template": template, "batch_size": batch_size, "limit": limit}
    result = {**result_header("classify", model, data, settings), **summarize(rows, list(mapping)), "items": rows}
    return write_result(out, result)
