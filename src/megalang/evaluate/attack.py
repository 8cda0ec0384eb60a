"""`megalang eval robustness --attack NAME`: TextAttack attacks on a classify set, querying megalang's scorer.

TextAttack does the search, the perturbations, the constraints and the metrics; this module only wraps the
scorer as a TextAttack model (class probabilities from the verbaliser label log-likelihoods), picks the
recipe, seeds it and writes the result and the successful adversarial examples.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.evaluate import classify as classify_eval
from megalang.evaluate.common import CLASSIFY, load_scorer, read_jsonl, result_header, write_result
from megalang.store.files import write_text_atomic

# The recipes that run offline (docs/security.md, "Adversarial robustness (TextAttack)", says why the rest
# cannot): name → TextAttack recipe class in textattack.attack_recipes, or None for one assembled here.
ATTACKS: dict[str, str | None] = {
    "deepwordbug": "DeepWordBugGao2018",  # character level: swap/substitute/delete/insert, greedy by word importance
    "pruthi": "Pruthi2019",  # character level: one word, keyboard typos, greedy
    "word-deletion": None,  # word level: TextAttack's WordDeletion, greedy by word importance (no published recipe)
}
MIN_ITEMS = 2

# NLTK's English stop-word list (nltk_data corpora/stopwords/english). `import textattack` builds a
# StopwordModification from it at import time and nltk_data is a separate download that cannot run offline,
# so megalang writes this copy where NLTK looks (the recipes then skip exactly the words they skip upstream).
NLTK_ENGLISH_STOPWORDS = """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their theirs themselves what
which who whom this that that'll these those am is are was were be been being have has had having do does did doing
a an the and but if or because as until while of at by for with about against between into through during before
after above below to from up down in out on off over under again further then once here there when where why how all
any both each few more most other some such no nor not only own same so than too very s t can will just don don't
should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn
hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn
wasn't weren weren't won won't wouldn wouldn't""".split()


def check_attack(name: str) -> None:
    if name not in ATTACKS:
        raise UserError(f"--attack {name}: unknown; supported (offline): {', '.join(ATTACKS)}")


def import_textattack():
    """Import TextAttack with NLTK's stop-word list in place (written once into megalang's cache)."""
    import nltk

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "megalang" / "nltk_data"
    english = root / "corpora" / "stopwords" / "english"
    if not english.is_file():
        english.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(english, "\n".join(NLTK_ENGLISH_STOPWORDS) + "\n")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    try:
        import textattack
    except ImportError as e:
        raise UserError(f"--attack needs TextAttack: pip install --no-deps textattack==0.3.11 flair==0.11.3, then "
                        f"pip install -r requirements/textattack.txt, as the Makefile does ({e})") from None
    return textattack


def build_attack(name: str, model_wrapper):
    """The TextAttack `Attack` for `name` against `model_wrapper`."""
    import textattack.attack_recipes as recipes
    from textattack import Attack
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import UntargetedClassification
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordDeletion

    check_attack(name)
    recipe = ATTACKS[name]
    if recipe is not None:
        return getattr(recipes, recipe).build(model_wrapper)
    goal = UntargetedClassification(model_wrapper)
    return Attack(goal, [RepeatModification(), StopwordModification()], WordDeletion(), GreedyWordSwapWIR("delete"))


def make_model_wrapper(scorer, verbalizer: dict[str, str], template: str):
    """A TextAttack ModelWrapper whose every query scores the texts with megalang's scorer."""
    import numpy as np
    from textattack.models.wrappers import ModelWrapper

    labels = list(verbalizer)

    class ScorerModelWrapper(ModelWrapper):
        def __init__(self):
            self.model = scorer  # TextAttack reads .model (e.g. for its cache key); the scorer is the model here

        def __call__(self, text_input_list: list[str]):
            records = [{"text": t, "_line": i, "label": labels[0]} for i, t in enumerate(text_input_list)]
            rows = classify_eval.score_records(scorer, records, verbalizer, template)
            lls = np.array([r["loglikelihoods"] for r in rows], dtype=np.float64)
            # Class probabilities: softmax over the label log-likelihoods, so argmax is `eval classify`'s prediction.
            probs = np.exp(lls - lls.max(axis=1, keepdims=True))
            return probs / probs.sum(axis=1, keepdims=True)

    return ScorerModelWrapper()


def run_attack(attack, dataset: list[tuple[str, int]], seed: int) -> list[Any]:
    """One TextAttack result per (text, label index); seeded per example, so --limit does not change a result."""
    from textattack.shared.utils import set_seed

    results = []
    for i, (text, label) in enumerate(dataset):
        set_seed(seed + i)  # random, numpy and torch: the character recipes draw from numpy
        results.append(attack.attack(text, label))
    return results


def summarize(results: list[Any]) -> dict[str, Any]:
    """TextAttack's own counts and metrics; the rates as unrounded fractions (TextAttack rounds its percentages
    to two decimals), defined as TextAttack defines them: success rate = successful / (successful + failed)."""
    from textattack.attack_results import SuccessfulAttackResult
    from textattack.metrics import AttackQueries, AttackSuccessRate, WordsPerturbed

    rate = AttackSuccessRate().calculate(results)
    words = WordsPerturbed().calculate(results)
    queries = AttackQueries().calculate(results)
    # TextAttack's "avg_word_perturbed" is the mean input length (its report calls it "Average num. words per
    # input"); the words changed are counted with its own all_words_diff, over successful attacks as its percentage.
    changed = [len(r.original_result.attacked_text.all_words_diff(r.perturbed_result.attacked_text))
               for r in results if isinstance(r, SuccessfulAttackResult)]
    ok, failed, n = rate["successful_attacks"], rate["failed_attacks"], len(results)
    return {
        "clean_accuracy": (ok + failed) / n,
        "attacked_accuracy": failed / n,
        "attack_success_rate": ok / (ok + failed) if ok + failed else 0.0,
        "avg_perturbed_words": sum(changed) / len(changed) if changed else 0.0,
        "avg_perturbed_words_percent": float(words["avg_word_perturbed_perc"]),
        "avg_words_per_input": float(words["avg_word_perturbed"]),
        "avg_queries": float(queries["avg_num_queries"]),
        "successful": ok,
        "failed": failed,
        "skipped": rate["skipped_attacks"],
    }


def adversarial_examples(results: list[Any], records: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    from textattack.attack_results import SuccessfulAttackResult

    rows = []
    for r, rec in zip(results, records, strict=True):
        if isinstance(r, SuccessfulAttackResult):
            rows.append({
                "line": rec["_line"],
                "gold": str(rec["label"]),
                "original_text": r.original_result.attacked_text.text,
                "perturbed_text": r.perturbed_result.attacked_text.text,
                "original_label": labels[r.original_result.output],
                "perturbed_label": labels[r.perturbed_result.output],
                "num_queries": r.perturbed_result.num_queries,
            })
    return rows


def evaluate_attack(
    model: str,
    data: str,
    attack: str,
    out: str | None = None,
    examples: str | None = None,
    seed: int = 0,
    verbalizer: str | None = None,
    batch_size: int = 16,
    limit: int | None = None,
) -> dict[str, Any]:
    """Clean accuracy, accuracy under attack, success rate, perturbed words and queries; examples to JSONL."""
    check_attack(attack)
    records = read_jsonl(data, CLASSIFY)[: limit or None]
    if len(records) < MIN_ITEMS:
        raise UserError(f"{data}: an attack needs at least {MIN_ITEMS} items to report rates (got {len(records)}); add items or raise --limit")
    mapping = classify_eval.parse_verbalizer(verbalizer, sorted({str(r["label"]) for r in records}) if not verbalizer else None)
    classify_eval.check_labels(records, mapping, str(data))
    labels = list(mapping)
    textattack = import_textattack()
    _, scorer = load_scorer(model, batch_size)
    wrapper = make_model_wrapper(scorer, mapping, classify_eval.DEFAULT_TEMPLATE)
    built = build_attack(attack, wrapper)
    results = run_attack(built, [(r["text"], labels.index(str(r["label"]))) for r in records], seed)
    rows = adversarial_examples(results, records, labels)
    examples = examples or (str(Path(out).with_suffix("")) + ".examples.jsonl" if out else None)
    if examples:
        import json

        Path(examples).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(examples, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    settings = {"attack": attack, "recipe": ATTACKS[attack] or "WordDeletion+GreedyWordSwapWIR(delete)", "seed": seed,
                "task": CLASSIFY.name, "verbalizer": mapping, "limit": limit,
                "textattack_version": getattr(textattack, "__version__", None) or version("textattack")}
    result = {**result_header("robustness", model, data, settings), "attack": attack,
              "textattack_version": settings["textattack_version"], **summarize(results), "n": len(records),
              "examples": str(Path(examples).resolve()) if examples else None}
    return write_result(out, result)
