"""Bad eval sets fail with one UserError line naming the file and line (and nothing is written)."""

import json

import pytest

from megalang.errors import UserError
from megalang.evaluate.choice import evaluate_choice, parse_items
from megalang.evaluate.classify import evaluate_classify
from megalang.evaluate.common import CHOICE, read_jsonl

from evalsets import write_jsonl

Q = {"question": "2+2?", "choices": ["3", "4"], "answer": 1}


def error_of(tmp_path, rows, fn=None):
    path = write_jsonl(tmp_path / "set.jsonl", rows)
    with pytest.raises(UserError) as e:
        (fn or (lambda p: parse_items(read_jsonl(p, CHOICE), str(p))))(path)
    return str(e.value), path


@pytest.mark.parametrize(
    "bad, expect",
    [
        ({**Q, "answer": 2}, "'answer' 2 is out of range for 2 choices"),
        ({**Q, "answer": "C"}, "'answer' 'C' is out of range"),
        ({**Q, "answer": "maybe"}, "is not a letter"),
        ({**Q, "choices": []}, "'choices' must be a non-empty list"),
        ({**Q, "choices": ["ok", ""]}, "every choice must be a non-empty string"),
        ({"text": "log line", "label": "benign"}, "a classify record (text, label) in a choice set; mixed schemas"),
        ({"question": "q", "choices": ["a"]}, "missing answer"),
        ({**Q, "explanation": "x"}, "unknown key(s) explanation"),
    ],
)
def test_choice_errors_name_the_line(tmp_path, bad, expect):
    message, path = error_of(tmp_path, [Q, Q, bad])
    assert f"{path}:3:" in message and expect in message


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text(json.dumps(Q) + "\n{not json\n")
    with pytest.raises(UserError, match=r"set.jsonl:2: not valid JSON"):
        read_jsonl(path, CHOICE)


def test_label_missing_from_verbaliser_names_the_line(tmp_path):
    rows = [{"text": "GET /index.html 200", "label": "benign"}, {"text": "rm -rf /", "label": "evil"}]
    path = write_jsonl(tmp_path / "threats.jsonl", rows)
    out = tmp_path / "result.json"
    with pytest.raises(UserError) as e:
        evaluate_classify("unused-model", str(path), "benign=benign,suspicious=suspicious,malicious=malicious", str(out))
    assert f"{path}:2: label 'evil' is not in the verbaliser (benign, suspicious, malicious)" in str(e.value)
    assert not out.exists()


def test_bad_set_fails_before_the_model_loads_and_writes_nothing(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [Q, {**Q, "answer": 5}])
    out = tmp_path / "r.json"
    with pytest.raises(UserError, match=r"set.jsonl:2: 'answer' 5 is out of range"):
        evaluate_choice("no-such-model", str(path), str(out))
    assert not out.exists()
