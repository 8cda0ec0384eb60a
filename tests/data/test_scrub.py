"""data/scrub.py and data/decontaminate.py: planted PII/secrets, a clean code sample, eval-overlap detection."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import pytest

from megalang.config import PrepareConfig
from megalang.data.decontaminate import build_index
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare
from megalang.data.scrub import KINDS, luhn_ok, scrub

PLANTED = [
    ("mail john.doe+news@example.co.uk today", "EMAIL"),
    ("server at 192.168.10.20 is down", "IPV4"),
    ("link-local fe80::1ff:fe23:4567:890a here", "IPV6"),
    ("v6 2001:db8::8a2e:370:7334 here", "IPV6"),
    ("call +1 415-555-0132 now", "PHONE"),
    ("call (212) 555-0199 now", "PHONE"),
    ("call 555.123.4567 now", "PHONE"),
    ("call +44 20 7946 0958 now", "PHONE"),
    ("card 4111 1111 1111 1111 ok", "CARD"),
    ("card 5500005555555559.", "CARD"),
    ("amex 378282246310005 ok", "CARD"),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY"),
    ('aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"', "AWS_SECRET_KEY"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----", "PRIVATE_KEY"),
    ("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "GITHUB_TOKEN"),
    ("hook xoxb-123456789012-abcdefABCDEF", "SLACK_TOKEN"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "JWT"),
    ('password = "hunter2hunter"', "SECRET"),
    ("api_key=abc123def456", "SECRET"),
]
NOT_PII = [
    "card 4111111111111112 fails Luhn",  # Luhn-invalid
    "password = getpass()",  # a call, not a value
    "api_key=self.api_key",
    "slice a[1::2] and std::vector",
    "version 3.11.7 and 1.2.3.4.5",
    "at 12:30:45 on 2026-11-28",
    "x = 1000000000000000",  # big constant, no issuer prefix / Luhn
]
# Real code with none of the above (the stdlib modules the data tests already use).
CLEAN_CODE = ["heapq.py", "bisect.py", "shlex.py", "fnmatch.py", "glob.py", "string.py", "copy.py", "colorsys.py",
              "keyword.py", "queue.py", "sched.py", "csv.py", "json/decoder.py", "json/encoder.py", "getpass.py",
              "secrets.py", "hmac.py", "base64.py", "random.py", "statistics.py"]


@pytest.mark.parametrize("text, kind", PLANTED)
def test_planted_pii_is_replaced_by_its_typed_placeholder(text, kind):
    out, counts = scrub(text)
    assert counts == {kind: 1}, (out, counts)
    assert f"<{kind}>" in out


@pytest.mark.parametrize("text", NOT_PII)
def test_look_alikes_are_left_alone(text):
    assert scrub(text) == (text, {})


def test_no_false_hits_on_clean_code():
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for rel in CLEAN_CODE:
        text = (stdlib / rel).read_text(encoding="utf-8")
        out, counts = scrub(text)
        assert not counts, f"{rel}: {dict(counts)}"
        assert out == text


def test_kinds_can_be_selected_and_luhn_is_correct():
    assert scrub("mail a.b@example.com at 10.0.0.1", ("IPV4",)) == ("mail a.b@example.com at <IPV4>", {"IPV4": 1})
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert set(KINDS) >= {"EMAIL", "IPV4", "IPV6", "PHONE", "CARD", "AWS_ACCESS_KEY", "PRIVATE_KEY", "JWT", "SECRET"}


QUESTION = "Which planet in the solar system has the largest number of confirmed moons as of the year 2023?"


def test_contamination_index_finds_copies_despite_case_and_punctuation():
    index = build_index([QUESTION, "Name the largest ocean on planet Earth please."], 13)
    assert index.matches("Quiz: WHICH planet in the solar system has the largest number of confirmed moons, as of the year 2023") > 0
    assert index.matches("name the largest ocean on planet earth please") == 1  # short item: whole-item n-gram
    assert index.matches("The solar system has eight planets and many moons orbiting them.") == 0


def test_prepare_drops_or_flags_contaminated_docs(tmp_path):
    (tmp_path / "in").mkdir()
    docs = [f"Trivia night notes. {QUESTION} The answer is Saturn.", "A clean training document about gardening and soil."]
    (tmp_path / "in" / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"text": QUESTION}) + "\n")
    base = dict(inputs=[str(tmp_path / "in")], decontaminate=[str(tmp_path / "eval.jsonl")], workers=1,
                steps=["normalize", "length", "decontaminate", "scrub"])
    dropped = prepare(PrepareConfig(out=str(tmp_path / "drop"), **base))
    assert [r["text"] for r in iter_prepared(tmp_path / "drop")] == docs[1:]
    assert dropped["counts"]["steps"]["decontaminate"]["reasons"] == {"eval_overlap": [1, len(docs[0])]}
    sample = json.loads((tmp_path / "drop" / "rejected" / "decontaminate.jsonl").read_text())
    assert sample["reason"] == "eval_overlap" and "Saturn" in sample["text"]
    flagged = prepare(PrepareConfig(out=str(tmp_path / "flag"), decontaminate_mode="flag", **base))
    assert len(list(iter_prepared(tmp_path / "flag"))) == 2
    assert flagged["decontamination"]["flagged"] == 1 and flagged["decontamination"]["flagged_examples"][0]["ngrams"] > 0


def test_prepare_scrubs_and_counts(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text(json.dumps({"text": "Write to ops@example.com or call +1 415-555-0132."}) + "\n")
    manifest = prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), workers=1,
                                     steps=["normalize", "length", "scrub"]))
    assert [r["text"] for r in iter_prepared(tmp_path / "out")] == ["Write to <EMAIL> or call <PHONE>."]
    assert manifest["scrubbed"] == {"EMAIL": 1, "PHONE": 1}
