"""`megalang eval classify`: GLUE-style classification by scoring each label's verbaliser word.

The prompt is a template over the record's text; each label is the continuation `" " + verbaliser[label]`
and the prediction is the label with the highest log-likelihood (the harness's way of scoring GLUE). Metrics are
scikit-learn's; two-class sets also get a threshold sweep on the softmax of the label log-likelihoods.
"""

from __future__ import annotations

import json
import math
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

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


def check_every_label_present(records: list[dict[str, Any]], verbalizer: dict[str, str], source: str,
                              limit: int | None = None) -> None:
    """Refuse a verbaliser label with no records: its recall and F1 are undefined (scikit-learn would report 0),
    and a threat set without a single malicious example says nothing about detection."""
    present = {str(r["label"]) for r in records}
    empty = [label for label in verbalizer if label not in present]
    if empty:
        read = f"the first {len(records)} records (--limit {limit})" if limit else f"{len(records)} records"
        raise UserError(
            f"{source}: no record has label {', '.join(map(repr, empty))} of the verbaliser ({', '.join(verbalizer)}) "
            f"in {read}, so its recall and F1 are undefined; add examples of it{', raise --limit' if limit else ''} "
            "or drop it from --verbalizer (the model then cannot predict it)"
        )


POSITIVE_NAMES = ("malicious", "positive", "1", "true", "yes")


def choose_positive(labels: list[str], positive: str | None) -> str | None:
    """The positive class of a two-class set: --positive, else the one label named malicious, positive, 1, true or
    yes (any case), else the second label. None for sets of three or more labels (no threshold sweep)."""
    if positive is not None:
        if positive not in labels:
            raise UserError(f"--positive {positive}: not a label of the verbaliser ({', '.join(labels)})")
        if len(labels) != 2:
            raise UserError(f"--positive {positive}: the threshold sweep needs two labels; the verbaliser has {len(labels)}")
        return positive
    if len(labels) != 2:
        return None
    named = [label for label in labels if label.lower() in POSITIVE_NAMES]
    return named[0] if len(named) == 1 else labels[1]


# --- metrics (scikit-learn's definitions, computed by scikit-learn) -------------------------------------


def sklearn_metrics():
    """sklearn.metrics, imported when metrics are computed (the `eval` extra)."""
    try:
        from sklearn import metrics
    except ImportError:
        raise UserError("classification metrics need scikit-learn: pip install 'megalang[eval]'") from None
    return metrics


def classification_metrics(gold: list[int], pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix (rows: gold,
    columns: predicted). A class never predicted has precision 0 (zero_division=0) and is listed in
    `never_predicted`. Macro and weighted F1 average over labels that occur as gold or prediction, as
    `f1_score(average=...)` does by default (in `eval classify` every label occurs as gold)."""
    skm = sklearn_metrics()
    index = list(range(len(labels)))
    p, r, f, support = skm.precision_recall_fscore_support(gold, pred, labels=index, zero_division=0)
    predicted = set(pred)
    return {
        "accuracy": float(skm.accuracy_score(gold, pred)),
        "macro_f1": float(skm.f1_score(gold, pred, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(gold, pred, average="weighted", zero_division=0)),
        "per_class": {
            label: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]), "support": int(support[k])}
            for k, label in enumerate(labels)
        },
        "never_predicted": [label for k, label in enumerate(labels) if k not in predicted],
        "labels": labels,
        "confusion_matrix": skm.confusion_matrix(gold, pred, labels=index).tolist(),
        "n": len(gold),
    }


SWEEP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def threshold_metrics(is_positive: list[int], scores: list[float]) -> dict[str, Any]:
    """Two-class sets, from P(positive) per record: ROC AUC, average precision, the threshold with the best F1
    (over every distinct score, from the precision-recall curve), and precision/recall/F1/false-positive rate
    when `score >= t` is called positive, for t in SWEEP_THRESHOLDS."""
    skm = sklearn_metrics()
    y, s = np.asarray(is_positive), np.asarray(scores)
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[: len(thresholds)]
    best = int(np.argmax(f1))  # thresholds ascend: the lowest threshold among equal F1s
    return {
        "roc_auc": float(skm.roc_auc_score(y, s)),
        "average_precision": float(skm.average_precision_score(y, s)),
        "best_f1": float(f1[best]),
        "best_f1_threshold": float(thresholds[best]),
        "threshold_sweep": [sweep_row(y, s >= t, t) for t in SWEEP_THRESHOLDS],
    }


def sweep_row(y, called, threshold: float) -> dict[str, float]:
    skm = sklearn_metrics()
    p, r, f, _ = skm.precision_recall_fscore_support(y, called, average="binary", pos_label=1, zero_division=0)
    tn, fp, _, _ = skm.confusion_matrix(y, called, labels=[0, 1]).ravel()
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {"threshold": threshold, "precision": float(p), "recall": float(r), "f1": float(f), "false_positive_rate": float(fpr)}


def label_probabilities(loglikelihoods: list[float]) -> list[float]:
    """Softmax over the label words' summed log-likelihoods: the model's probability of each label, given that
    the answer is one of them."""
    top = max(loglikelihoods)
    weights = [math.exp(ll - top) for ll in loglikelihoods]
    return [w / sum(weights) for w in weights]


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


def summarize(rows: list[dict[str, Any]], labels: list[str], positive: str | None = None) -> dict[str, Any]:
    """The metrics of scored rows; with a `positive` label (two-class sets) also the threshold metrics, and each
    row gains `p_positive`."""
    index = {label: k for k, label in enumerate(labels)}
    result = classification_metrics([index[r["gold"]] for r in rows], [index[r["pred"]] for r in rows], labels)
    if positive is None:
        return result
    for r in rows:
        r["p_positive"] = label_probabilities(r["loglikelihoods"])[index[positive]]
    return {**result, "positive": positive,
            **threshold_metrics([int(r["gold"] == positive) for r in rows], [r["p_positive"] for r in rows])}


def evaluate_classify(
    model: str,
    data: str,
    verbalizer: str | None = None,
    out: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    batch_size: int = 16,
    limit: int | None = None,
    positive: str | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """`megalang eval classify`: accuracy, per-class and macro/weighted F1, the confusion matrix and, for two
    labels, ROC AUC, average precision and a threshold sweep on P(positive); plus one row per record."""
    records = read_jsonl(data, CLASSIFY)[: limit or None]
    mapping = parse_verbalizer(verbalizer, sorted({str(r["label"]) for r in records}) if not verbalizer else None)
    check_labels(records, mapping, str(data))
    check_every_label_present(records, mapping, str(data), limit)
    positive = choose_positive(list(mapping), positive)
    render(template, "")
    _, scorer = load_scorer(model, batch_size, backend=backend)
    with closing(scorer):
        rows = score_records(scorer, records, mapping, template)
    settings = {"verbalizer": mapping, "template": template, "batch_size": batch_size, "limit": limit, "positive": positive}
    result = {**result_header("classify", model, data, settings), **summarize(rows, list(mapping), positive), "items": rows}
    return write_result(out, result)
