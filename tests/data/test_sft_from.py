"""data/sft_from.py and data/security_qa.py: chats from the sample feeds' CVE and ATT&CK records, every answer
traced to the record's own fields, no question for a missing field, the split by record id, determinism, the
manifest's counts and the CLI's bad-input cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megalang.config import SftFromConfig
from megalang.data.documents import iter_prepared
from megalang.data.records import META_COLUMNS
from megalang.data.security_qa import CWE_NAMES, cwe_answer, explain_vector, questions_for
from megalang.data.sft_from import sft_from

from .test_feeds import T1059, T1059_001
from .test_security_prepare import feeds_and_logs, run

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("sft-from")
    run(tmp, [feeds_and_logs(tmp / "in")])
    return tmp / "out"


def make(prepared: Path, out: Path, **kw) -> dict:
    return sft_from(SftFromConfig(input=str(prepared), out=str(out), **kw))


def rows_of(out: Path) -> dict[str, list[dict]]:
    return {split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]
            for split in ("train", "val")}


@pytest.fixture(scope="module")
def made(prepared, tmp_path_factory) -> tuple[dict, dict[str, list[dict]]]:
    out = tmp_path_factory.mktemp("made") / "sft"
    return make(prepared, out), rows_of(out)


def answers(rows: dict[str, list[dict]]) -> dict[tuple[str, str], str]:
    return {(r["record_id"], r["question"]): r["messages"][1]["content"] for split in rows.values() for r in split}


def test_cve_answers_are_the_records_own_fields(made):
    _, rows = made
    got = answers(rows)
    assert got["CVE-2021-44228", "cwe"] == ("CWE-502 (Deserialization of Untrusted Data); CWE-400 (Uncontrolled Resource "
                                            "Consumption); CWE-20 (Improper Input Validation)")
    assert got["CVE-2021-44228", "severity"] == (
        "CRITICAL: CVSS 3.1 base score 10.0 (CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H). Why: Attack Vector: "
        "Network, Attack Complexity: Low, Privileges Required: None, User Interaction: None, Scope: Changed, "
        "Confidentiality: High, Integrity: High, Availability: High.")
    assert got["CVE-2023-4863", "cwe"] == "CWE-787 (Out-of-bounds Write)"  # from CISA's ADP container
    assert got["CVE-2014-0160", "affected"] == "openssl openssl (1.0.1 or 1.0.1f)"
    # the CWE question shows the description it asks about
    log4j = next(r for s in rows.values() for r in s if r["record_id"] == "CVE-2021-44228" and r["question"] == "cwe")
    assert "JNDI features used in configuration" in log4j["messages"][0]["content"]
    assert [m["role"] for m in log4j["messages"]] == ["user", "assistant"]


def test_technique_answers_are_the_records_own_fields(made):
    _, rows = made
    got = answers(rows)
    assert got[T1059, "mitigations"] == "- M1038 Execution Prevention: Use application control where appropriate."
    assert got[T1059, "tactics"] == "execution"
    assert got[T1059, "platforms"] == "Linux, macOS, Windows, Network"
    assert got[T1059, "detection"] == "Monitor command-line arguments for script execution."
    assert got[T1059_001, "used_by"] == "APT29 (G0016, group); Cobalt Strike (S0154, software)"
    prompt = next(r for s in rows.values() for r in s if r["record_id"] == T1059 and r["question"] == "mitigations")
    assert "T1059 (Command and Scripting Interpreter)" in prompt["messages"][0]["content"]


def test_every_answer_is_traceable_to_its_record(prepared, made):
    """Each answer is rebuilt from the prepared row's columns: words only from the row or the fixed tables."""
    _, rows = made
    docs = {r.get("cve_id") or r["record_id"]: r for r in iter_prepared(prepared, columns=("id", *META_COLUMNS))
            if r["format"] in ("nvd", "cve5", "stix")}
    for split in rows.values():
        for r in split:
            row, answer = docs[r["record_id"]], r["messages"][1]["content"]
            fields = json.loads(row["fields"])
            if r["question"] == "cwe":
                assert answer == cwe_answer(row["cwe_ids"])
            elif r["question"] == "severity":
                assert answer.startswith(f"{fields['severity']}: CVSS {fields['cvss_version']} base score "
                                         f"{row['cvss_score']:.1f} ({row['cvss_vector']})")
            elif r["question"] in ("tactics", "platforms"):
                assert answer.split(", ") == row[r["question"]]
            elif r["question"] == "detection":
                assert answer == fields["detection"]
            elif r["question"] == "mitigations":
                assert all(f"{m['id']} {m['name']}" in answer for m in fields["mitigations"])
            elif r["question"] == "affected":
                assert all(product in answer for product in fields["affected"])


def test_no_question_for_a_missing_field(made):
    manifest, rows = made
    got = answers(rows)
    assert (T1059_001, "mitigations") not in got and (T1059_001, "detection") not in got  # neither in the bundle
    assert (T1059, "used_by") not in got  # APT29 uses the sub-technique, not T1059
    assert manifest["counts"]["skipped"] == {"no_detection": 1, "no_mitigations": 1, "no_used_by": 1}
    row = {"format": "nvd", "record_id": "CVE-2000-0001", "cve_id": "CVE-2000-0001", "cwe_ids": [],
           "cvss_score": None, "fields": json.dumps({"description": "A bug.", "affected_versions": {}})}
    assert questions_for(row, ("cwe", "severity", "affected"), 0) == ([], ["no_cwe", "no_severity", "no_affected"])
    assert cwe_answer(["CWE-1333"]) == "CWE-1333" and "CWE-1333" not in CWE_NAMES  # no name made up


def test_cvss_vectors_of_each_version_in_the_specifications_words():
    assert explain_vector("AV:N/AC:M/Au:N/C:C/I:C/A:C", "2.0") == (
        "Access Vector: Network, Access Complexity: Medium, Authentication: None, Confidentiality Impact: Complete, "
        "Integrity Impact: Complete, Availability Impact: Complete")
    assert explain_vector("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:P/VC:H/VI:L/VA:N/SC:N/SI:N/SA:N/E:A", None).startswith(
        "Attack Vector: Network, Attack Complexity: Low, Attack Requirements: None, Privileges Required: None, "
        "User Interaction: Passive, Vulnerable System Confidentiality: High")
    assert "E:" not in explain_vector("CVSS:4.0/AV:N/E:A", None)  # threat metrics are not base metrics


def test_split_is_by_record_and_every_question_of_a_record_on_one_side(made):
    manifest, rows = made
    train, val = ({r["record_id"] for r in rows[s]} for s in ("train", "val"))
    assert train and val and not train & val
    counts = manifest["counts"]
    assert (counts["train_records"], counts["val_records"]) == (len(train), len(val))
    assert (counts["train_rows"], counts["val_rows"]) == (len(rows["train"]), len(rows["val"]))


def test_manifest_counts(made):
    manifest, rows = made
    counts = manifest["counts"]
    assert manifest["stage"] == "data.sft_from" and manifest["inputs"][0]["stage"] == "data.prepare"
    assert counts["documents_cve"] == 3 and counts["documents_technique"] == 2 and counts["records"] == 5
    assert counts["ignored_attack_other"] == 3  # M1038, G0016, S0154: no technique questions
    assert counts["questions_by_type"] == {"cwe": 3, "severity": 3, "affected": 3, "tactics": 2, "platforms": 2,
                                           "mitigations": 1, "detection": 1, "used_by": 1}
    assert counts["questions"] == 16 == counts["train_rows"] + counts["val_rows"]
    assert set(manifest["files"]) == {"train.jsonl", "val.jsonl"}


def test_same_seed_same_bytes_and_the_seed_changes_phrasing(prepared, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 7)):
        make(prepared, tmp_path / name, seed=seed)
    read = {n: (tmp_path / n / "train.jsonl").read_bytes() + (tmp_path / n / "val.jsonl").read_bytes() for n in "abc"}
    assert read["a"] == read["b"]
    assert read["a"] != read["c"]


def test_questions_option_and_a_val_record_when_the_hash_picks_none(prepared, tmp_path):
    manifest = make(prepared, tmp_path / "cwe", questions=["cwe"], val_fraction=1e-9)
    rows = rows_of(tmp_path / "cwe")
    assert {r["question"] for s in rows.values() for r in s} == {"cwe"}
    assert manifest["counts"]["val_records"] == 1 and manifest["counts"]["train_records"] == 2
    make(prepared, tmp_path / "all-train", val_fraction=0)
    assert rows_of(tmp_path / "all-train")["val"] == []


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "megalang", "data", "sft-from", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def one_error_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(e in lines[0] for e in expected), lines[0]
    return lines[0]


def test_cli_bad_input_is_one_line_and_exit_2(prepared, tmp_path):
    one_error_line(cli("-i", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o")), str(tmp_path / "nowhere"))
    plain = tmp_path / "plain"
    plain.mkdir()
    one_error_line(cli("-i", str(plain), "-o", str(tmp_path / "o")), str(plain), "manifest.json")
    # a prepared folder with nothing but prose: say how to get CVE/ATT&CK rows
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.md").write_text("The on-call engineer rotated the keys after the review. " * 3)
    run(tmp_path / "notes", [tmp_path / "notes" / "a.md"])
    one_error_line(cli("-i", str(tmp_path / "notes" / "out"), "-o", str(tmp_path / "o")),
                   str(tmp_path / "notes" / "out"), "megalang data prepare -i FEEDS")
    one_error_line(cli("-i", str(prepared), "-o", str(prepared / "sft")), "inside")
    assert not (prepared / "sft").exists()
    one_error_line(cli("-i", str(prepared), "-o", str(tmp_path / "o"), "--questions", "cwe,bogus"), "bogus")
    one_error_line(cli("-i", str(prepared), "-o", str(tmp_path / "o"), "--val-fraction", "1.5"), "val_fraction")
    assert not (tmp_path / "o").exists()


def test_cli_refuses_an_existing_out_unless_overwrite(prepared, tmp_path):
    out = tmp_path / "sft"
    first = cli("-i", str(prepared), "-o", str(out))
    assert first.returncode == 0, first.stderr
    assert "train_rows=" in first.stdout and "val_rows=" in first.stdout
    one_error_line(cli("-i", str(prepared), "-o", str(out)), str(out), "already exists")
    assert cli("-i", str(prepared), "-o", str(out), "--overwrite").returncode == 0
