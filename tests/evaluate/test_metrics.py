"""Every eval metric against hand-computed values, and lm-eval's windowing/tokenisation rules."""

import math

import pytest

from evalsets import ByteTokenizer

from megalang.evaluate.choice import ChoiceItem, aggregate, by_subject, choice_predictions, context_for, item_text
from megalang.evaluate.classify import classification_metrics
from megalang.evaluate.perplexity import count_words, rolling_metrics
from megalang.evaluate.robustness import PERTURBATIONS, perturb
from megalang.evaluate.scoring import Scorer, rolling_windows
from megalang.evaluate.textgen import cut_at_stop, generation_metrics


def test_choice_predictions_raw_per_char_and_per_byte():
    # raw argmax picks "a" (-2); per char: -2/1=-2, -3/5=-0.6, -4/2=-2 → "bbbbb";
    # per byte: "é" is 2 bytes, so "éé" (4 bytes) gets -4/4=-1 < -0.6: still "bbbbb".
    got = choice_predictions([-2.0, -3.0, -4.0], ["a", "bbbbb", "éé"])
    assert got == {"pred": 0, "pred_norm": 1, "pred_bytes": 1}
    # per byte differs from per char with multi-byte characters: "éé" is 2 chars but 4 bytes.
    # raw: -3.0 < -2.7; per char: -1.5 < -0.9; per byte: -0.75 > -0.9.
    got = choice_predictions([-3.0, -2.7], ["éé", "yyy"])
    assert got == {"pred": 1, "pred_norm": 1, "pred_bytes": 0}


def test_ties_go_to_the_first_choice_as_numpy_argmax():
    assert choice_predictions([-1.0, -1.0], ["aa", "bb"]) == {"pred": 0, "pred_norm": 0, "pred_bytes": 0}


def test_accuracy_aggregates_and_per_subject():
    rows = [
        {"pred": 0, "pred_norm": 1, "pred_bytes": 1, "gold": 1, "subject": "math"},
        {"pred": 2, "pred_norm": 2, "pred_bytes": 0, "gold": 2, "subject": "math"},
        {"pred": 1, "pred_norm": 0, "pred_bytes": 0, "gold": 0, "subject": "art"},
        {"pred": 3, "pred_norm": 3, "pred_bytes": 3, "gold": 3, "subject": "art"},
    ]
    assert aggregate(rows) == {"acc": 0.5, "acc_norm": 1.0, "acc_bytes": 0.75, "n": 4}
    subjects = by_subject(rows)
    assert subjects["math"]["acc"] == 0.5 and subjects["art"]["acc_bytes"] == 1.0


def test_prompts_arc_mmlu_and_fewshot():
    item = ChoiceItem("What is 2+2?", ["3", "4"], 1, "elementary_math")
    shot = ChoiceItem("What is 1+1?", ["2", "5"], 0, "elementary_math")
    assert item_text(item, "arc") == "Question: What is 2+2?\nAnswer:"
    assert item_text(item, "mmlu") == "What is 2+2?\nA. 3\nB. 4\nAnswer:"
    assert context_for(item, "arc", [shot]) == "Question: What is 1+1?\nAnswer: 2\n\nQuestion: What is 2+2?\nAnswer:"
    assert context_for(item, "mmlu", []).startswith(
        "The following are multiple choice questions (with answers) about elementary math.\n\n"
    )


def test_confusion_matrix_and_macro_f1():
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    got = classification_metrics(gold, pred, ["benign", "suspicious", "malicious"])
    assert got["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # F1 per label: 0: tp1 fp1 fn1 → 0.5; 1: tp2 fp1 fn0 → 0.8; 2: tp1 fp0 fn1 → 2/3
    assert got["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert got["per_class"]["suspicious"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert got["accuracy"] == pytest.approx(4 / 6)
    # a label that is neither gold nor predicted is left out of the macro average (evals during training)
    assert classification_metrics([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == 1.0


def test_rolling_metrics_weighted_like_lm_eval():
    texts = ["a b c", "dd ee"]  # 3 + 2 words, 5 + 5 bytes
    lls = [-6.0, -4.0]
    got = rolling_metrics(lls, [4, 6], texts)
    assert got["word_perplexity"] == pytest.approx(math.exp(10 / 5))
    assert got["byte_perplexity"] == pytest.approx(math.exp(10 / 10))
    assert got["bits_per_byte"] == pytest.approx(1 / math.log(2))
    assert got["token_perplexity"] == pytest.approx(math.exp(1.0))
    assert count_words("one  two\nthree") == 3


def test_rolling_windows_equal_lm_eval():
    utils = pytest.importorskip("lm_eval.utils")
    tokens = list(range(10, 33))
    for max_len, ctx_len in [(5, 1), (8, 1), (8, 3), (30, 1), (1, 1)]:
        theirs = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(tokens, 0, max_len, ctx_len)]
        assert list(rolling_windows(tokens, 0, max_len, ctx_len)) == theirs
    # every token predicted once, disjoint windows, and the last one gets full context
    windows = list(rolling_windows(tokens, 0, 5, 1))
    assert [t for _, pred in windows for t in pred] == tokens
    assert len(windows[-1][0]) + len(windows[-1][1]) == 6


class _Cfg:
    max_position_embeddings = 64


class _Model:
    config = _Cfg()

    def parameters(self):
        import torch

        yield torch.zeros(1)

    def eval(self):
        return self


def test_encode_pair_moves_trailing_space_and_handles_empty_context():
    s = Scorer(_Model(), ByteTokenizer())
    ctx, cont = s.encode_pair("Answer: ", "yes")
    assert ctx == [b + 3 for b in b"Answer:"] and cont == [b + 3 for b in b" yes"]
    assert s.encode_pair("", "hi") == ([1], [b + 3 for b in b"hi"])


def test_generation_metrics_hand_computed():
    pytest.importorskip("sacrebleu")
    got = generation_metrics(["the cat sat on the mat", "hello"], [["the cat sat on the mat"], ["goodbye", "hello"]])
    assert got["exact_match"] == 1.0
    assert got["rouge1"] == pytest.approx(1.0) and got["rougeL"] == pytest.approx(1.0)
    # ROUGE-1 by hand: hyp "a b c d", ref "a b x y": P = R = 2/4 → F1 0.5; bigrams: "a b" shared of 3 → 1/3
    got = generation_metrics(["a b c d"], [["a b x y"]])
    assert got["rouge1"] == pytest.approx(0.5) and got["rouge2"] == pytest.approx(1 / 3)
    assert got["exact_match"] == 0.0
    # BLEU by hand: precisions 2/4, 1/3, 0/2, 0/1; sacrebleu's default "exp" smoothing turns the k-th
    # zero count into 1/2^k of the total: 3-grams 1/(2·2), 4-grams 1/(4·1); brevity penalty 1.
    assert got["bleu"] == pytest.approx((50 * (100 / 3) * 25 * 25) ** 0.25)
    assert 0 < got["chrf"] < 100
    assert generation_metrics(["the cat sat on the mat"], [["the cat sat on the mat"]])["bleu"] == pytest.approx(100.0)
    assert cut_at_stop("answer\n\nQuestion: next", ["\n\n"]) == "answer"


def test_perturbations_are_seeded_and_respect_the_rate():
    text = "The attacker tried to delete the file from the big house quickly"
    for kind in PERTURBATIONS:
        a, b = perturb(text, kind, 0.3, seed=1, line=7), perturb(text, kind, 0.3, seed=1, line=7)
        assert a == b, kind
        assert a != text, kind
        assert perturb(text, kind, 0.3, seed=2, line=7) != a
    assert perturb("abcd", "case", 1.0, 0, 1) == "ABCD"
    assert perturb("abcd", "delete", 1.0, 0, 1) == ""
    assert perturb("abcd", "swap", 1.0, 0, 1) == "badc"
    assert perturb("a b", "whitespace", 1.0, 0, 1) in ("a  b", "ab")
    rate = sum(c != d for c, d in zip(text, perturb(text, "case", 0.2, 0, 3))) / sum(c.isalpha() for c in text)
    assert 0.05 < rate < 0.4
