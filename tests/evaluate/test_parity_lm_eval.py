"""Parity with lm-evaluation-harness (HFLM) on SmolLM2-135M-Instruct: the same local multiple-choice task and
rolling-perplexity task through lm-eval's HFLM and through megalang give the same numbers."""

import math

import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from megalang.evaluate.choice import aggregate, parse_items, score_items  # noqa: E402
from megalang.evaluate.common import CHOICE, read_jsonl  # noqa: E402
from megalang.evaluate.harness import MegalangLM, run_tasks  # noqa: E402
from megalang.evaluate.perplexity import read_documents, rolling_perplexity  # noqa: E402
from megalang.evaluate.scoring import Scorer  # noqa: E402

PPL_WINDOW = 16  # small, so every document spans several rolling windows

MC_TASK = """task: megalang_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
"""

PPL_TASK = """task: megalang_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory, mc_file, ppl_file, monkeypatch_module):
    d = tmp_path_factory.mktemp("tasks")
    (d / "mc.yaml").write_text(MC_TASK.format(path=mc_file))
    (d / "ppl.yaml").write_text(PPL_TASK.format(path=ppl_file))
    monkeypatch_module.setenv("HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets")))
    return d


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def hflm_results(smollm, tasks_dir):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=smollm.model, tokenizer=smollm.tokenizer, batch_size=8)
    mc = run_tasks(lm, ["megalang_mc"], str(tasks_dir), log_samples=True)
    return mc


@pytest.fixture(scope="module")
def hflm_ppl(smollm, tasks_dir):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=smollm.model, tokenizer=smollm.tokenizer, batch_size=8, max_length=PPL_WINDOW)
    return run_tasks(lm, ["megalang_ppl"], str(tasks_dir))["results"]["megalang_ppl"]


def test_choice_matches_lm_eval_hflm(smollm, mc_file, hflm_results):
    items = parse_items(read_jsonl(mc_file, CHOICE), str(mc_file))
    ours = score_items(Scorer(smollm.model, smollm.tokenizer, batch_size=8), items)
    theirs = sorted(hflm_results["samples"]["megalang_mc"], key=lambda s: s["doc_id"])
    assert len(theirs) == len(ours) == 24
    for row, sample in zip(ours, theirs):
        their_lls = [float(r[0]) for r in sample["filtered_resps"]]
        assert row["loglikelihoods"] == pytest.approx(their_lls, abs=1e-4)
        assert row["pred"] == max(range(len(their_lls)), key=lambda k: (their_lls[k], -k))
    metrics = aggregate(ours)
    table = hflm_results["results"]["megalang_mc"]
    assert metrics["acc"] == table["acc,none"]
    assert metrics["acc_norm"] == table["acc_norm,none"]
    assert metrics["acc"] != metrics["acc_norm"] or metrics["acc"] not in (0.0, 1.0)  # a set that discriminates


def test_harness_adapter_gives_hflm_numbers(smollm, tasks_dir, hflm_results):
    """lm-eval driving megalang's adapter: the same per-choice log-likelihoods as HFLM (first 8 documents)."""
    ours = run_tasks(MegalangLM(Scorer(smollm.model, smollm.tokenizer, batch_size=8)), ["megalang_mc"], str(tasks_dir),
                     limit=8, log_samples=True)
    theirs = {s["doc_id"]: s for s in hflm_results["samples"]["megalang_mc"]}
    samples = ours["samples"]["megalang_mc"]
    assert len(samples) == 8
    for sample in samples:
        expect = [float(r[0]) for r in theirs[sample["doc_id"]]["filtered_resps"]]
        assert [float(r[0]) for r in sample["filtered_resps"]] == pytest.approx(expect, abs=1e-4)
        assert sample["acc"] == theirs[sample["doc_id"]]["acc"]
        assert sample["acc_norm"] == theirs[sample["doc_id"]]["acc_norm"]


def test_rolling_perplexity_matches_lm_eval_hflm(smollm, ppl_file, hflm_ppl):
    scorer = Scorer(smollm.model, smollm.tokenizer, batch_size=8)
    texts = read_documents(str(ppl_file))
    ours = rolling_perplexity(scorer, texts, window=PPL_WINDOW)
    assert max(d["tokens"] for d in ours["per_document"]) > 2 * PPL_WINDOW  # several windows per document
    assert ours["word_perplexity"] == pytest.approx(hflm_ppl["word_perplexity,none"], rel=1e-4)
    assert ours["byte_perplexity"] == pytest.approx(hflm_ppl["byte_perplexity,none"], rel=1e-4)
    assert ours["bits_per_byte"] == pytest.approx(hflm_ppl["bits_per_byte,none"], rel=1e-4)
    assert math.isfinite(ours["token_perplexity"]) and ours["token_perplexity"] > 1


def test_harness_adapter_rolling_matches_hflm(smollm, tasks_dir, hflm_ppl):
    ours = run_tasks(MegalangLM(Scorer(smollm.model, smollm.tokenizer, batch_size=8, max_length=PPL_WINDOW)), ["megalang_ppl"], str(tasks_dir))
    assert ours["results"]["megalang_ppl"]["word_perplexity,none"] == pytest.approx(hflm_ppl["word_perplexity,none"], rel=1e-4)
