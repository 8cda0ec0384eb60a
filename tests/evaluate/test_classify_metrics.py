"""`eval classify` metrics equal scikit-learn's, computed here independently on the same predictions and scores
(a planted scorer returns fixed log-likelihoods per record); bad input is one line and exit code 2."""

import json
import random

import numpy as np
import pytest
from evalsets import write_jsonl
from sklearn import metrics as skm
from typer.testing import CliRunner

import megalang.evaluate.classify as classify
from megalang.cli import app

runner = CliRunner()


class PlantedScorer:
    """Log-likelihood of label word w after the prompt of text t: PLANTED[t][w]."""

    def __init__(self, planted: dict[str, dict[str, float]]):
        self.planted = planted

    def loglikelihood(self, requests):
        return [(self.planted[ctx.removesuffix("\nLabel:")][word.strip()], False) for ctx, word in requests]

    def close(self) -> None:  # the scorers load_scorer returns are closed after use (llama.cpp frees its context)
        pass


def planted_set(tmp_path, labels, n, seed, never=None):
    """n records with random gold labels and log-likelihoods that favour the gold label more often than not;
    `never` is a label the planted model never predicts."""
    rng = random.Random(seed)
    rows, planted = [], {}
    for i in range(n):
        gold = labels[i % len(labels)]
        text = f"event {i}"
        lls = {w: rng.uniform(-6, -1) + (1.5 if w == gold else 0.0) for w in labels}
        if never:
            lls[never] = -50.0
        rows.append({"text": text, "label": gold})
        planted[text] = lls
    return write_jsonl(tmp_path / "set.jsonl", rows), planted


@pytest.fixture
def plant(monkeypatch):
    def install(planted):
        monkeypatch.setattr(classify, "load_scorer", lambda model, batch_size, **_: (None, PlantedScorer(planted)))

    return install


def expected_classification(result, labels):
    """scikit-learn on the predictions the result's items hold."""
    gold = [i["gold"] for i in result["items"]]
    pred = [i["pred"] for i in result["items"]]
    # the prediction is the argmax of the planted log-likelihoods (first wins)
    assert pred == [labels[int(np.argmax(i["loglikelihoods"]))] for i in result["items"]]
    p, r, f, s = skm.precision_recall_fscore_support(gold, pred, labels=labels, zero_division=0)
    return {
        "accuracy": skm.accuracy_score(gold, pred),
        "macro_f1": skm.f1_score(gold, pred, average="macro"),
        "weighted_f1": skm.f1_score(gold, pred, average="weighted"),
        "confusion_matrix": skm.confusion_matrix(gold, pred, labels=labels).tolist(),
        "per_class": {lab: {"precision": p[k], "recall": r[k], "f1": f[k], "support": s[k]} for k, lab in enumerate(labels)},
    }


def assert_classification_equals_sklearn(result, labels):
    want = expected_classification(result, labels)
    assert result["labels"] == labels and result["n"] == len(result["items"])
    assert result["confusion_matrix"] == want["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "weighted_f1"):
        assert result[key] == pytest.approx(want[key], abs=1e-12), key
    for label in labels:
        for key, value in want["per_class"][label].items():
            assert result["per_class"][label][key] == pytest.approx(value, abs=1e-12), (label, key)


def test_two_class_metrics_and_threshold_sweep_equal_scikit_learn(tmp_path, plant):
    labels = ["benign", "malicious"]
    data, planted = planted_set(tmp_path, labels, 40, seed=1)
    plant(planted)
    result = classify.evaluate_classify("stub", str(data), "benign=benign,malicious=malicious", out=str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["roc_auc"] == result["roc_auc"]
    assert_classification_equals_sklearn(result, labels)
    assert 0 < result["accuracy"] < 1  # the planted model is imperfect, so the numbers are not trivial

    assert result["positive"] == "malicious" and result["settings"]["positive"] == "malicious"
    y = np.array([i["gold"] == "malicious" for i in result["items"]], dtype=int)
    lls = np.array([i["loglikelihoods"] for i in result["items"]])
    p = np.exp(lls - lls.max(1, keepdims=True))
    score = (p / p.sum(1, keepdims=True))[:, 1]
    assert [i["p_positive"] for i in result["items"]] == pytest.approx(score.tolist(), abs=1e-12)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert result["average_precision"] == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)

    # best F1 by brute force over every distinct score as the threshold (lowest threshold among equals)
    f1s = [(skm.f1_score(y, score >= t), -t) for t in np.unique(score)]
    best_f1, neg_t = max(f1s)
    assert result["best_f1"] == pytest.approx(best_f1, abs=1e-12) and result["best_f1_threshold"] == pytest.approx(-neg_t)

    assert [row["threshold"] for row in result["threshold_sweep"]] == list(classify.SWEEP_THRESHOLDS)
    for row in result["threshold_sweep"]:
        called = score >= row["threshold"]
        tn, fp, fn, tp = skm.confusion_matrix(y, called, labels=[0, 1]).ravel()
        assert row["precision"] == pytest.approx(skm.precision_score(y, called, zero_division=0), abs=1e-12)
        assert row["recall"] == pytest.approx(skm.recall_score(y, called), abs=1e-12)
        assert row["f1"] == pytest.approx(skm.f1_score(y, called, zero_division=0), abs=1e-12)
        assert row["false_positive_rate"] == pytest.approx(fp / (fp + tn), abs=1e-12)
    # the argmax prediction is the 0.5 row (as docs/evaluation.md says)
    half = result["threshold_sweep"][classify.SWEEP_THRESHOLDS.index(0.5)]
    assert {k: half[k] for k in ("precision", "recall", "f1")} == {k: result["per_class"]["malicious"][k] for k in ("precision", "recall", "f1")}


def test_positive_option_sweeps_the_other_class(tmp_path, plant):
    data, planted = planted_set(tmp_path, ["benign", "malicious"], 20, seed=2)
    plant(planted)
    result = classify.evaluate_classify("stub", str(data), "benign=benign,malicious=malicious", positive="benign")
    y = [int(i["gold"] == "benign") for i in result["items"]]
    score = [i["p_positive"] for i in result["items"]]
    assert result["positive"] == "benign"
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert result["average_precision"] == pytest.approx(skm.average_precision_score(y, score), abs=1e-12)


@pytest.mark.parametrize(
    "labels, positive",
    [(["malicious", "benign"], "malicious"), (["ham", "spam"], "spam"), (["yes", "no"], "yes"), (["1", "0"], "1"),
     (["Positive", "Negative"], "Positive"), (["a", "b", "c"], None)],
)
def test_default_positive_class(labels, positive):
    assert classify.choose_positive(labels, None) == positive


def test_three_classes_a_class_never_predicted(tmp_path, plant):
    labels = ["benign", "suspicious", "malicious"]
    data, planted = planted_set(tmp_path, labels, 30, seed=3, never="suspicious")
    plant(planted)
    result = classify.evaluate_classify("stub", str(data), ",".join(labels))
    assert_classification_equals_sklearn(result, labels)
    assert result["never_predicted"] == ["suspicious"] and result["per_class"]["suspicious"]["precision"] == 0.0
    assert result["per_class"]["suspicious"]["support"] == 10
    assert not {"positive", "roc_auc", "threshold_sweep"} & set(result)


# --- the CLI: a short summary, and bad input as one line ---------------------------------------------


def cli(*args):
    result = runner.invoke(app, ["eval", "classify", "--model", "stub", *map(str, args)])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def test_cli_prints_a_short_summary(tmp_path, plant):
    data, planted = planted_set(tmp_path, ["benign", "malicious"], 12, seed=4)
    plant(planted)
    out = tmp_path / "r.json"
    code, lines = cli("--data", data, "--verbalizer", "benign=benign,malicious=malicious", "--out", out)
    assert code == 0, lines
    shown = json.loads("\n".join(lines))
    assert shown["roc_auc"] == json.loads(out.read_text())["roc_auc"]
    assert "threshold_sweep" not in shown and "items" not in shown and "threshold_sweep" in json.loads(out.read_text())
    assert len(lines) == len(shown) + 2  # one line per key


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model must not load for bad input")

    monkeypatch.setattr(classify, "load_scorer", refuse)


@pytest.mark.parametrize(
    "rows, args, expect",
    [
        ([{"text": "GET /", "label": "benign"}, {"text": "rm -rf /", "label": "evil"}], ["--verbalizer", "benign,malicious"],
         ["set.jsonl:2: label 'evil' is not in the verbaliser (benign, malicious)", "add it to --verbalizer"]),
        ([{"text": "GET /", "label": "benign"}] * 2, ["--verbalizer", "benign,malicious"],
         ["set.jsonl: no record has label 'malicious'", "in 2 records", "drop it from --verbalizer"]),
        ([{"text": "GET /", "label": "benign"}, {"text": "x", "label": "malicious"}], ["--verbalizer", "benign,malicious", "--limit", "1"],
         ["no record has label 'malicious'", "the first 1 records (--limit 1)", "raise --limit"]),
        ([{"text": "GET /", "label": "benign"}, {"text": "x", "label": "malicious"}], ["--positive", "evil"],
         ["--positive evil: not a label of the verbaliser (benign, malicious)"]),
        ([{"text": "a", "label": "benign"}, {"text": "b", "label": "malicious"}, {"text": "c", "label": "odd"}],
         ["--positive", "malicious"], ["--positive malicious: the threshold sweep needs two labels; the verbaliser has 3"]),
    ],
    ids=["label-not-in-verbaliser", "empty-class", "empty-class-after-limit", "positive-unknown", "positive-three-labels"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, no_model, rows, args, expect):
    data = write_jsonl(tmp_path / "set.jsonl", rows)
    code, lines = cli("--data", data, "--out", tmp_path / "r.json", *args)
    assert code == 2 and len(lines) == 1, lines
    for part in expect:
        assert part in lines[0], lines[0]
    assert not (tmp_path / "r.json").exists()
