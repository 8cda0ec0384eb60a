"""An option the chosen mode does not read is refused (exit 2, one line naming it) before any work starts; the same
option is accepted where the mode reads it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from megalang.cli import app

runner = CliRunner()


def run_cli(*args) -> tuple[int, list[str]]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


@pytest.fixture
def stages(monkeypatch):
    """Every stage the commands below could reach records its call instead of working."""
    calls = []
    for target, result in [
        ("megalang.data.pipeline.prepare", {"counts": {}}),
        ("megalang.data.tokenize.tokenize", {"counts": {}}),
        ("megalang.data.sft.tokenize_sft", {"counts": {}}),
        ("megalang.evaluate.perplexity.perplexity", {}),
        ("megalang.evaluate.perplexity.evaluate_rolling", {"per_document": []}),
        ("megalang.evaluate.textgen.evaluate_generate", {}),
        ("megalang.evaluate.choice.evaluate_choice", {}),
        ("megalang.evaluate.robustness.evaluate_robustness", {}),
    ]:
        monkeypatch.setattr(target, lambda *a, _t=target, _r=result, **k: calls.append((_t, k)) or dict(_r))
    return calls


@pytest.fixture
def files(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "doc.txt").write_text("one document\n")
    (tmp_path / "docs.jsonl").write_text(json.dumps({"body": "a document"}) + "\n")
    (tmp_path / "mc.jsonl").write_text(json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": 1}) + "\n")
    (tmp_path / "cls.jsonl").write_text(json.dumps({"text": "a log line", "label": "benign"}) + "\n")
    return tmp_path


TOKENIZE_SFT = ["data", "tokenize", "--format", "sft", "-i", "chat.jsonl", "--tokenizer", "model", "-o", "out"]
PPL = ["eval", "perplexity", "--model", "m.gguf"]
GEN = ["eval", "generate", "--model", "m.gguf", "--data", "gen.jsonl"]

REFUSED = {
    "sft --val-fraction": ([*TOKENIZE_SFT, "--val-fraction", 0.1], "--val-fraction", "--set val_fraction="),
    "sft --val-source": ([*TOKENIZE_SFT, "--val-source", "*/val/*"], "--val-source", "--format sft"),
    "packed --stride": ([*PPL, "--data", "{shards}", "--mode", "packed", "--stride", 4], "--stride", "packed"),
    "packed --text-field": ([*PPL, "--data", "{shards}", "--mode", "packed", "--text-field", "body"], "--text-field", "packed"),
    "packed --max-docs": ([*PPL, "--data", "{shards}", "--mode", "packed", "--max-docs", 2], "--max-docs", "packed"),
    "auto on shards --stride": ([*PPL, "--data", "{shards}", "--stride", 4], "--stride", "packed"),
    "rolling --max-batches": ([*PPL, "--data", "{doc.txt}", "--mode", "rolling", "--max-batches", 1], "--max-batches", "rolling"),
    "rolling text --split": ([*PPL, "--data", "{docs.jsonl}", "--split", "train"], "--split", "is a file"),
    "rolling txt --text-field": ([*PPL, "--data", "{doc.txt}", "--text-field", "body"], "--text-field", "not a .jsonl"),
    "rolling shards --text-field": ([*PPL, "--data", "{shards}", "--mode", "rolling", "--text-field", "body"],
                                    "--text-field", "not a .jsonl"),
    "greedy --top-p": ([*GEN, "--top-p", 0.9], "--top-p", "--temperature 0"),
    "greedy --seed": ([*GEN, "--seed", 3], "--seed", "--temperature 0"),
    "zero-shot --fewshot": (["eval", "choice", "--model", "m", "--data", "{mc.jsonl}", "--fewshot", "{mc.jsonl}"],
                            "--fewshot", "--num-fewshot"),
    "choice set --verbalizer": (["eval", "robustness", "--model", "m", "--data", "{mc.jsonl}", "--verbalizer", "a=b"],
                                "--verbalizer", "choice set"),
    "classify set --format": (["eval", "robustness", "--model", "m", "--data", "{cls.jsonl}", "--format", "mmlu"],
                              "--format", "classify set"),
    "no quality step --kind": (["data", "prepare", "-i", "corpus", "-o", "out", "--steps",
                                "normalize,length,exact_dedup", "--kind", "web"], "--kind",
                               "quality, scrub and near_dedup steps"),
}


def fill(args, root):
    """'{name}' → the path of that file under `root`."""
    return [str(root / a[1:-1]) if str(a).startswith("{") else str(a) for a in args]


@pytest.mark.parametrize("case", list(REFUSED))
def test_an_option_the_mode_ignores_is_refused(stages, files, case):
    args, option, why = REFUSED[case]
    code, lines = run_cli(*fill(args, files))
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}: "), lines
    assert why in lines[0], lines
    assert stages == []


ACCEPTED = {
    "text --val-fraction --val-source": (["data", "tokenize", "-i", "d", "--tokenizer", "t", "-o", "o",
                                          "--val-fraction", 0.1, "--val-source", "*/v/*"], "tokenize"),
    "packed --split --max-batches": ([*PPL, "--data", "{shards}", "--split", "train", "--max-batches", 1], "perplexity"),
    "rolling jsonl --text-field --stride --max-docs": (
        [*PPL, "--data", "{docs.jsonl}", "--text-field", "body", "--stride", 4, "--max-docs", 2], "evaluate_rolling"),
    "rolling shards --split --stride": ([*PPL, "--data", "{shards}", "--mode", "rolling", "--split", "train",
                                         "--stride", 4], "evaluate_rolling"),
    "sampling --top-p --seed": ([*GEN, "--temperature", 0.7, "--top-p", 0.9, "--seed", 3], "evaluate_generate"),
    "few-shot --fewshot": (["eval", "choice", "--model", "m", "--data", "{mc.jsonl}", "--fewshot", "{mc.jsonl}",
                            "--num-fewshot", 1], "evaluate_choice"),
    "choice set --format": (["eval", "robustness", "--model", "m", "--data", "{mc.jsonl}", "--format", "mmlu"],
                            "evaluate_robustness"),
    "classify set --verbalizer": (["eval", "robustness", "--model", "m", "--data", "{cls.jsonl}", "--verbalizer", "benign=ok"],
                                  "evaluate_robustness"),
    "quality step --kind": (["data", "prepare", "-i", "c", "-o", "o", "--steps", "normalize,quality", "--kind", "web"],
                            "prepare"),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_the_same_option_is_accepted_where_the_mode_reads_it(stages, files, case):
    args, stage = ACCEPTED[case]
    code, lines = run_cli(*fill(args, files))
    assert code == 0, lines
    assert [t.rsplit(".", 1)[1] for t, _ in stages] == [stage]
