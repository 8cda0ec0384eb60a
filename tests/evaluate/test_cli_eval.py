"""`megalang eval <kind>` end to end on SmolLM2-135M-Instruct (loaded once per session): result JSON contents,
exit codes, and bad input → exit 2 with one line naming the file and line."""

import json

import pytest
from typer.testing import CliRunner

from evalsets import MC_ITEMS, write_jsonl
from megalang.cli import app

runner = CliRunner()


@pytest.fixture
def cli(smollm, monkeypatch):
    """Run the CLI in-process with the session's model instead of loading the GGUF again."""
    import megalang.model.load as load

    monkeypatch.setattr(load, "load_model_for_inference", lambda path, step=None: smollm)

    def run(*args):
        result = runner.invoke(app, list(map(str, args)))
        return result.exit_code, result.output

    return run


def test_choice_writes_metrics_items_and_provenance(cli, tmp_path):
    rows = [{"question": q, "choices": c, "answer": "ABCD"[a], "subject": "easy" if i % 2 else "general"}
            for i, (q, c, a) in enumerate(MC_ITEMS[:6])]
    data = write_jsonl(tmp_path / "mc.jsonl", rows)
    out = tmp_path / "r" / "choice.json"
    code, text = cli("eval", "choice", "--model", "smol.gguf", "--data", data, "--out", out, "--format", "mmlu")
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["kind"] == "choice" and r["settings"]["format"] == "mmlu" and len(r["data_sha256"]) == 64
    assert r["megalang_version"] and r["model"].endswith("smol.gguf")
    assert len(r["items"]) == 6 and all(len(i["loglikelihoods"]) == 4 for i in r["items"])
    assert r["acc"] == sum(i["pred"] == i["gold"] for i in r["items"]) / 6
    assert set(r["subjects"]) == {"easy", "general"} and r["subjects"]["easy"]["n"] == 3


def test_classify_threats(cli, tmp_path):
    rows = [
        {"text": "User alice logged in from the office network.", "label": "benign"},
        {"text": "Scheduled backup completed successfully.", "label": "benign"},
        {"text": "Five failed password attempts for root from an unknown IP.", "label": "suspicious"},
        {"text": "Ransomware encrypted all files and demands bitcoin payment.", "label": "malicious"},
    ]
    data = write_jsonl(tmp_path / "threats.jsonl", rows)
    out = tmp_path / "cls.json"
    code, text = cli("eval", "classify", "--model", "m.gguf", "--data", data, "--out", out,
                     "--verbalizer", "benign=benign,suspicious=suspicious,malicious=malicious",
                     "--template", "Log: {text}\nThreat level:")
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["labels"] == ["benign", "suspicious", "malicious"]
    assert sum(map(sum, r["confusion_matrix"])) == 4 and 0 <= r["macro_f1"] <= 1
    assert r["accuracy"] == sum(i["pred"] == i["gold"] for i in r["items"]) / 4


def test_generate_and_metrics(cli, tmp_path):
    rows = [{"prompt": "The capital of France is", "reference": "Paris"},
            {"prompt": "2 + 2 =", "references": ["4", "four"]}]
    data = write_jsonl(tmp_path / "gen.jsonl", rows)
    out = tmp_path / "gen.json"
    code, text = cli("eval", "generate", "--model", "m.gguf", "--data", data, "--out", out, "--max-new-tokens", "6", "--until", "\n")
    assert code == 0, text
    r = json.loads(out.read_text())
    assert len(r["items"]) == 2 and all("\n" not in i["output"] for i in r["items"])
    assert {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match"} <= set(r)


def test_robustness_reports_clean_and_perturbed(cli, tmp_path):
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in MC_ITEMS[:5]]
    data = write_jsonl(tmp_path / "mc.jsonl", rows)
    out = tmp_path / "rob.json"
    code, text = cli("eval", "robustness", "--model", "m.gguf", "--data", data, "--out", out,
                     "--perturbation", "keyboard", "--perturbation", "case", "--rate", "0.3", "--seed", "3")
    assert code == 0, text
    r = json.loads(out.read_text())
    assert set(r["perturbed"]) == {"keyboard", "case"}
    for v in r["perturbed"].values():
        assert v["drop"] == pytest.approx(r["clean_accuracy"] - v["accuracy"])


def test_rolling_perplexity_on_text(cli, tmp_path, ppl_file):
    out = tmp_path / "ppl.json"
    code, text = cli("eval", "perplexity", "--model", "m.gguf", "--data", ppl_file, "--window", "24", "--out", out)
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["settings"]["mode"] == "rolling" and r["documents"] == 4
    assert r["bits_per_byte"] > 0 and r["word_perplexity"] > r["token_perplexity"] > 1


def test_bad_answer_exits_2_naming_the_line(cli, tmp_path):
    data = write_jsonl(tmp_path / "mc.jsonl", [{"question": "q", "choices": ["a", "b"], "answer": 0},
                                               {"question": "q", "choices": ["a", "b"], "answer": 3}])
    code, text = cli("eval", "choice", "--model", "m.gguf", "--data", data)
    assert code == 2
    assert f"{data}:2: 'answer' 3 is out of range for 2 choices" in " ".join(text.split())
