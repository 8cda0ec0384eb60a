"""`data prepare` on a security team's folder (issue #18): feeds, a STIX bundle, logs and a web archive recognised by
content, one document per record with its metadata columns, the `security` kind and its scrubbing (indicators kept,
personal data removed), languages identified and filtered, and every count in the manifest."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from megalang.config import SECURITY_SCRUB, PrepareConfig
from megalang.data import scrub
from megalang.data.documents import iter_prepared
from megalang.data.pipeline import prepare
from megalang.data.records import META_COLUMNS
from megalang.errors import UserError

from .test_feeds import attack_bundle, cve5_webp, nvd_feed
from .test_logs import AUTH_LOG, ECS, jsonl
from .test_web import EN, crawl_records, http_response, page, per_record_gzip, response

pytest.importorskip("fastwarc", reason="pip install 'megalang[security]'")

STEPS = ["normalize", "length", "quality", "scrub", "exact_dedup"]
# The test pages repeat one paragraph and the notes are short: web and books keep only the entropy filter here
# (their full chains are tested in test_quality.py); the security kind runs its default chain.
QUALITY = {"web": ["entropy"], "books": ["entropy"]}
PLANTED_EMAIL = "soc-analyst@example.com"


def feeds_and_logs(root):
    """A team's drop folder; names carry no hint of the formats (the feed is `.json.gz`, the log a `.txt`)."""
    root.mkdir()
    feed = nvd_feed()
    feed["vulnerabilities"][0]["cve"]["descriptions"][1]["value"] += f" Reported by {PLANTED_EMAIL}."  # the English one
    (root / "feed-2021.json.gz").write_bytes(gzip.compress(json.dumps(feed).encode()))
    (root / "cve-2023-4863.json").write_text(json.dumps(cve5_webp()))
    (root / "enterprise-attack.json").write_text(json.dumps(attack_bundle()))
    (root / "capture.txt").write_text(AUTH_LOG)
    (root / "app.jsonl").write_text(jsonl(ECS))
    (root / "crawl.warc.gz").write_bytes(per_record_gzip(crawl_records()))
    (root / "notes.md").write_text("# Incident notes\n\nThe on-call engineer rotated the keys after the review. " * 3)
    return root


def run(tmp_path, inputs, **extra) -> tuple[dict, list[dict]]:
    cfg = PrepareConfig(inputs=[str(p) for p in inputs], out=str(tmp_path / "out"), steps=STEPS, progress=False,
                        workers=1, log_year=2025, **{"quality_filters": QUALITY, **extra})
    manifest = prepare(cfg)
    rows = list(iter_prepared(tmp_path / "out", columns=("id", "text", "source", "kind", *META_COLUMNS)))
    return manifest, rows


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    return run(tmp, [feeds_and_logs(tmp / "in")])


def by_format(rows, fmt):
    return [r for r in rows if r["format"] == fmt]


def test_each_record_is_one_document_with_its_kind_and_metadata(prepared):
    manifest, rows = prepared
    nvd = by_format(rows, "nvd")
    assert [r["cve_id"] for r in nvd] == ["CVE-2021-44228", "CVE-2014-0160"]  # the rejected CVE is skipped
    log4j = nvd[0]
    assert log4j["cwe_ids"] == ["CWE-502", "CWE-400", "CWE-20"] and log4j["cvss_score"] == 10.0
    assert log4j["cvss_vector"].startswith("CVSS:3.1/AV:N") and log4j["kind"] == "security"
    assert json.loads(log4j["fields"])["severity"] == "CRITICAL"
    assert [r["cve_id"] for r in by_format(rows, "cve5")] == ["CVE-2023-4863"]
    stix = {r["attack_id"]: r for r in by_format(rows, "stix")}
    assert {"T1059", "T1059.001", "M1038", "G0016"} <= set(stix)
    assert stix["T1059"]["tactics"] == ["execution"] and "Windows" in stix["T1059"]["platforms"]
    assert "M1038" in stix["T1059"]["text"]  # the mitigates relationship, resolved into the technique's text
    logs = by_format(rows, "syslog")
    assert logs and all(r["kind"] == "security" and r["host"] for r in logs)
    assert {r["host"] for r in by_format(rows, "jsonlog")} == {"web01.example.com", "app01.example.com"}
    web = by_format(rows, "warc")
    assert {r["lang"] for r in web} == {"en", "es", "de"} and all(r["kind"] == "web" for r in web)
    notes = [r for r in rows if r["source"].endswith("notes.md")]
    assert notes[0]["kind"] == "books" and notes[0]["format"] is None  # plain sources: metadata null
    counts = manifest["counts"]
    assert counts["documents_by_kind"] == {"books": 1, "security": len(rows) - len(web) - 1, "web": len(web)}


def test_security_scrubbing_keeps_indicators_and_removes_personal_data(prepared):
    manifest, rows = prepared
    text = "\n".join(r["text"] for r in by_format(rows, "syslog"))
    assert "203.0.113.7" in text and "198.51.100.23" in text  # IP addresses are the indicators: kept
    assert "invalid user <USER> from 203.0.113.7" in text and "Accepted publickey for <USER> from" in text
    assert "deploy" not in text  # the user name, also in sudo's line and its PWD
    log4j = by_format(rows, "nvd")[0]["text"]
    assert "CVE-2021-44228" in log4j and "CWE-502" in log4j and "https://" in log4j
    assert PLANTED_EMAIL not in log4j and "<EMAIL>" in log4j
    scrubbed = manifest["scrubbed"]
    assert scrubbed["USER"] >= 4 and scrubbed["EMAIL"] >= 1 and "IPV4" not in scrubbed


def test_the_manifest_counts_what_the_readers_read_and_skipped(prepared):
    manifest, _ = prepared
    read = manifest["structured"]
    assert sorted(read) == ["cve5", "jsonlog", "nvd", "stix", "syslog", "warc"]
    assert all(read[fmt]["files"] == 1 for fmt in read)
    assert read["nvd"]["records_nvd"] == 2 and read["nvd"]["skipped_rejected"] == 2  # vulnStatus and "** REJECT **"
    assert read["cve5"]["records_cve5"] == 1
    assert read["stix"]["skipped_revoked"] == 1 and read["stix"]["skipped_deprecated"] == 1
    assert read["warc"]["skipped_not_html"] == 1 and read["warc"]["skipped_status"] == 1
    assert read["syslog"]["lines"] == len(AUTH_LOG.splitlines())


def test_languages_filter_web_pages_and_count_the_rest(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "crawl.warc.gz").write_bytes(per_record_gzip(crawl_records()))
    manifest, rows = run(tmp_path, [tmp_path / "in"], languages=["en", "es"])
    assert sorted(r["lang"] for r in rows) == ["en", "es"]
    assert manifest["structured"]["warc"]["skipped_language"] == 1


def test_the_scrub_choice_is_per_kind_and_overridable_per_input(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "auth.log").write_text(AUTH_LOG)
    (tmp_path / "in" / "other.log").write_text(AUTH_LOG.replace("web01", "web02"))
    _, rows = run(tmp_path, [tmp_path / "in"], scrub_by_source={"other.log": ["IPV4"]})
    text = {r["source"].rsplit("/", 1)[-1]: "\n".join(x["text"] for x in rows if x["source"] == r["source"]) for r in rows}
    assert "203.0.113.7" in text["auth.log"] and "<USER>" in text["auth.log"]
    assert "203.0.113.7" not in text["other.log"] and "<IPV4>" in text["other.log"] and "admin" in text["other.log"]


def test_security_scrub_default_is_every_rule_but_ip_addresses():
    assert set(SECURITY_SCRUB) == set(scrub.KINDS) - {"IPV4", "IPV6"}


def test_a_bad_feed_names_the_file_or_is_skipped_and_listed(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cut.json").write_text(json.dumps(nvd_feed())[:5000])  # a download cut short
    (tmp_path / "in" / "auth.log").write_text(AUTH_LOG)
    with pytest.raises(UserError, match=r"cut\.json"):
        run(tmp_path, [tmp_path / "in"])
    manifest, rows = run(tmp_path, [tmp_path / "in"], errors="skip", overwrite=True)
    assert rows and all(r["format"] == "syslog" for r in rows)
    assert manifest["counts"]["errors_skipped"] == 1 and "cut.json" in manifest["errors"][0]


def test_a_brute_force_window_survives_the_security_chain(tmp_path):
    """Hundreds of near-identical sshd lines are the attack, not junk: the web rules would drop them as repetitive
    (top n-grams, compression); the security kind keeps them."""
    (tmp_path / "in").mkdir()
    lines = [f"Dec  4 10:{i // 60:02d}:{i % 60:02d} web01 sshd[{4000 + i}]: Failed password for invalid user "
             f"{('admin', 'oracle', 'test', 'ubuntu')[i % 4]} from 203.0.113.{i % 250} port {40000 + i * 7} ssh2"
             for i in range(240)]
    (tmp_path / "in" / "auth.log").write_text("\n".join(lines) + "\n")
    manifest, rows = run(tmp_path, [tmp_path / "in"], quality_filters={})
    assert len(rows) == 1 and rows[0]["text"].count("Failed password") == 240
    web = PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "web"), steps=STEPS, progress=False,
                        workers=1, log_year=2025, kind="web")
    with pytest.raises(UserError, match="quality=1"):  # what the web chain would have done
        prepare(web)


def test_the_security_pretrain_recipe_mixes_sources_by_folder(tmp_path):
    from typer.testing import CliRunner

    from megalang.cli import app

    corpus = tmp_path / "corpus"
    for sub in ("feeds", "logs", "reports"):
        (corpus / sub).mkdir(parents=True)
    (corpus / "feeds" / "nvd.json").write_text(json.dumps(nvd_feed()))
    (corpus / "logs" / "auth.log").write_text(AUTH_LOG)
    (corpus / "reports" / "apt29.txt").write_text(
        "APT29 used spearphishing links (T1566.002) and PowerShell (T1059.001) against example.org; the loader beaconed "
        "to 198.51.100.77 over HTTPS and dropped a DLL with SHA-256 "
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08. Contact: ir-team@example.com.\n")
    result = CliRunner().invoke(app, ["data", "prepare", "--recipe", "recipes/security-pretrain.yaml", "-i", str(corpus),
                                      "-o", str(tmp_path / "out"), "--set", "log_year=2025", "--set", "workers=1"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    mixture = manifest["mixture"]
    assert mixture["feeds/*"]["documents_out"] == 4 * mixture["feeds/*"]["documents_in"] == 8
    assert mixture["logs/*"]["documents_out"] == 2 * mixture["logs/*"]["documents_in"]
    report = [r for r in iter_prepared(tmp_path / "out", columns=("text", "source", "kind")) if r["source"].endswith(".txt")]
    assert len(report) == 4 and report[0]["kind"] == "security"
    assert "198.51.100.77" in report[0]["text"] and "9f86d081" in report[0]["text"] and "<EMAIL>" in report[0]["text"]


def broken_inputs(folder):
    """One bad file per reader: a bundle of another STIX version, a WARC record whose HTTP body is cut short
    (the next record is fine), an auth log with an invalid UTF-8 line."""
    folder.mkdir()
    bundle = attack_bundle()
    bundle["objects"][3]["spec_version"] = "3.0"
    (folder / "attack.json").write_text(json.dumps(bundle))
    cut = response("http://example.com/cut", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 9999\r\n\r\n<p>")
    good = response("http://example.com/good", http_response(page("Advisory", EN, "en").encode()))
    (folder / "crawl.warc.gz").write_bytes(per_record_gzip([cut, good]))
    lines = AUTH_LOG.encode().splitlines(keepends=True)
    lines[2] = b"Dec  4 10:17:00 web01 CRON[2300]: caf\xe9 \xff session\n"
    (folder / "auth.log").write_bytes(b"".join(lines))
    return folder


@pytest.mark.parametrize("name, where", [("attack.json", r"objects\[3\]"), ("crawl.warc.gz", r"record 1"),
                                         ("auth.log", r"auth\.log:3")])
def test_bad_records_name_file_and_record_or_are_skipped_and_listed(tmp_path, name, where):
    folder = broken_inputs(tmp_path / "in")
    with pytest.raises(UserError) as e:
        run(tmp_path, [folder / name])
    assert str(folder / name) in str(e.value) and re.search(where, str(e.value)), e.value
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "other.log").write_text(AUTH_LOG)  # so the run has a corpus whatever is skipped
    manifest, rows = run(tmp_path, [folder / name, tmp_path / "good"], errors="skip", overwrite=True)
    listed = [e for e in manifest["errors"] if name in e]
    assert len(listed) == 1 and re.search(where, listed[0]), manifest["errors"]
    kept = [r for r in rows if r["source"].endswith(name)]
    # A bundle of another version is a wrong file, not one bad record: nothing from it. The others keep their
    # good records (the WARC's second page, the log's other lines).
    assert (not kept) if name == "attack.json" else kept
