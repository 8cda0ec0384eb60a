"""`eval robustness --attack`: TextAttack recipes against a planted weak classifier (a scorer that says "pos"
exactly when a trigger word is in the text), so a successful attack must have broken the trigger word."""

import importlib.util
import json
import math

import pytest
from typer.testing import CliRunner

from evalsets import write_jsonl
from megalang.cli import app
from megalang.evaluate import attack as attack_eval

# Not importorskip: `import textattack` needs the stop-word list that attack_eval.import_textattack puts in place.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("textattack") is None,
                                reason="TextAttack (extra `robustness`) is not installed")

runner = CliRunner()
TRIGGERS = {"good", "great", "excellent"}
TEXTS = [
    ("the movie was good and the acting fine", "pos"),
    ("what a great film overall", "pos"),
    ("boring plot and dull music", "neg"),
    ("a good story told well", "pos"),
    ("the ending felt rushed and flat", "neg"),
    ("great cast in a forgettable script", "pos"),
]


class TriggerWordScorer:
    """The planted weak classifier: label "pos" scores 0 and "neg" -2 when a trigger word is present, else the reverse."""

    def __init__(self):
        self.calls = 0

    def loglikelihood(self, requests):
        self.calls += 1
        out = []
        for ctx, cont in requests:
            want = "pos" if TRIGGERS & set(ctx.lower().split()) else "neg"
            out.append((0.0 if cont.strip() == want else -2.0, True))
        return out


def predict(text: str) -> str:
    return "pos" if TRIGGERS & set(text.lower().split()) else "neg"


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "reviews.jsonl", [{"text": t, "label": y} for t, y in TEXTS])


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.setattr(attack_eval, "load_scorer", lambda model, batch_size: (None, TriggerWordScorer()))

    def run(*args):
        result = runner.invoke(app, ["eval", "robustness", "--model", "planted", *map(str, args)])
        return result.exit_code, " ".join(result.output.split())

    return run


def test_wrapper_returns_class_probabilities_from_the_scorer():
    attack_eval.import_textattack()
    wrapper = attack_eval.make_model_wrapper(TriggerWordScorer(), {"neg": "neg", "pos": "pos"}, "{text}\nLabel:")
    probs = wrapper(["a good day", "a bad day"])
    assert probs.shape == (2, 2) and probs.sum(axis=1) == pytest.approx([1, 1])
    assert probs[0].argmax() == 1 and probs[1].argmax() == 0
    assert probs[0, 1] == pytest.approx(1 / (1 + math.exp(-2)))


@pytest.mark.parametrize("name", list(attack_eval.ATTACKS))
def test_attack_fools_the_planted_classifier(cli, data, tmp_path, name):
    out = tmp_path / f"{name}.json"
    code, text = cli("--data", data, "--attack", name, "--seed", "1", "--out", out)
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["attack"] == name and r["textattack_version"] and r["n"] == 6
    assert r["clean_accuracy"] == 1.0  # the planted classifier is right on every clean item
    # The 4 "pos" items carry a trigger word the attack can break; the 2 "neg" items have none to add.
    assert r["successful"] == 4 and r["failed"] == 2 and r["skipped"] == 0
    assert r["attack_success_rate"] == pytest.approx(4 / 6) and r["attacked_accuracy"] == pytest.approx(2 / 6)
    assert r["avg_perturbed_words"] >= 1 and r["avg_queries"] > 1
    rows = [json.loads(line) for line in open(r["examples"])]
    assert len(rows) == 4
    for row in rows:
        assert row["original_label"] == "pos" and row["perturbed_label"] == "neg"
        assert row["perturbed_text"] != row["original_text"]
        assert predict(row["original_text"]) == "pos" and predict(row["perturbed_text"]) == "neg"  # re-scored


def test_same_seed_same_results_and_examples(cli, data, tmp_path):
    runs = []
    for k in range(2):
        out = tmp_path / f"run{k}.json"
        code, text = cli("--data", data, "--attack", "deepwordbug", "--seed", "7", "--out", out,
                         "--examples", tmp_path / f"ex{k}.jsonl")
        assert code == 0, text
        r = json.loads(out.read_text())
        r.pop("examples")
        runs.append((r, (tmp_path / f"ex{k}.jsonl").read_text()))
    assert runs[0] == runs[1]
    assert runs[0][1].count("\n") == 4


def test_limit_keeps_the_first_items(cli, data, tmp_path):
    code, text = cli("--data", data, "--attack", "pruthi", "--limit", "2", "--verbalizer", "neg,pos",
                     "--out", tmp_path / "r.json")
    assert code == 0, text
    assert json.loads((tmp_path / "r.json").read_text())["n"] == 2


def test_one_item_set_exits_2_with_one_line(cli, tmp_path):
    one = write_jsonl(tmp_path / "one.jsonl", [{"text": "good", "label": "pos"}])
    code, text = cli("--data", one, "--attack", "deepwordbug", "--verbalizer", "neg,pos")
    assert code == 2
    assert f"{one}: an attack needs at least 2 items to report rates (got 1)" in text


def test_unknown_attack_lists_the_supported_ones(cli, data):
    code, text = cli("--data", data, "--attack", "textfooler")
    assert code == 2
    assert "--attack textfooler: unknown; supported (offline): deepwordbug, pruthi, word-deletion" in text


def test_synonym_perturbation_points_to_attack(cli, data):
    code, text = cli("--data", data, "--perturbation", "synonym")
    assert code == 2
    assert "--perturbation synonym: the hand-written synonym list was replaced by TextAttack attacks" in text
