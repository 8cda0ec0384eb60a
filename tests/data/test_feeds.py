"""data/feeds.py: NVD CVE JSON 2.0 feeds, CVE JSON 5 records and ATT&CK-shaped STIX 2.1 bundles, written here in the
published shapes with public facts (CVE-2021-44228, CVE-2014-0160, CVE-2023-4863, ATT&CK T1059/M1038/G0016), and
the bad-input cases."""

from __future__ import annotations

import bz2
import copy
import gzip
import json
from collections import Counter

import pytest

from megalang.data.feeds import read_feed, sniff_feed
from megalang.errors import UserError

LOG4J_TEXT = ("Apache Log4j2 2.0-beta9 through 2.15.0 (excluding security releases 2.12.2, 2.12.3, and 2.3.1) JNDI "
              "features used in configuration, log messages, and parameters do not protect against attacker "
              "controlled LDAP and other JNDI related endpoints.")
LOG4J_REFS = ["https://logging.apache.org/log4j/2.x/security.html", "https://www.debian.org/security/2021/dsa-5020"] + [
    f"https://advisories.example.com/log4j/{i}" for i in range(10)]
CHROME_RELEASE = "https://chromereleases.googleblog.com/2023/09/stable-channel-update-for-desktop_11.html"
HEARTBLEED_TEXT = ("The (1) TLS and (2) DTLS implementations in OpenSSL 1.0.1 before 1.0.1g do not properly handle "
                   "Heartbeat Extension packets, which allows remote attackers to obtain sensitive information from "
                   "process memory via crafted packets that trigger a buffer over-read, aka the Heartbleed bug.")


def cpe(criteria, vulnerable=True, **bounds):
    return {"vulnerable": vulnerable, "criteria": criteria, "matchCriteriaId": "00000000-0000-0000-0000-000000000000",
            **bounds}


def cvss_v31(score, severity, vector, source="nvd@nist.gov", kind="Primary"):
    return {"source": source, "type": kind, "cvssData": {"version": "3.1", "vectorString": vector, "baseScore": score,
                                                         "baseSeverity": severity}, "exploitabilityScore": 3.9}


def nvd_feed() -> dict:
    log4j = {
        "id": "CVE-2021-44228", "sourceIdentifier": "security@apache.org", "published": "2021-12-10T10:15:09.143",
        "lastModified": "2024-07-24T17:08:24.167", "vulnStatus": "Analyzed",
        "cveTags": [],
        "descriptions": [{"lang": "es", "value": "Las funciones JNDI de Apache Log4j2 ..."},
                         {"lang": "en", "value": LOG4J_TEXT}],
        "metrics": {
            "cvssMetricV31": [cvss_v31(10.0, "CRITICAL", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H")],
            "cvssMetricV2": [{"source": "nvd@nist.gov", "type": "Primary", "baseSeverity": "HIGH",
                              "cvssData": {"version": "2.0", "vectorString": "AV:N/AC:M/Au:N/C:C/I:C/A:C",
                                           "baseScore": 9.3}}]},
        "weaknesses": [
            {"source": "security@apache.org", "type": "Primary",
             "description": [{"lang": "en", "value": "CWE-502"}, {"lang": "en", "value": "CWE-400"},
                             {"lang": "en", "value": "CWE-20"}]},
            {"source": "nvd@nist.gov", "type": "Secondary",
             "description": [{"lang": "en", "value": "CWE-502"}, {"lang": "en", "value": "NVD-CWE-Other"}]}],
        "configurations": [
            {"nodes": [{"operator": "OR", "negate": False, "cpeMatch": [
                cpe("cpe:2.3:a:apache:log4j:*:*:*:*:*:*:*:*", versionStartIncluding="2.0.1", versionEndExcluding="2.3.1"),
                cpe("cpe:2.3:a:apache:log4j:*:*:*:*:*:*:*:*", versionStartIncluding="2.4", versionEndExcluding="2.12.2"),
                cpe("cpe:2.3:a:apache:log4j:*:*:*:*:*:*:*:*", versionStartIncluding="2.13.0", versionEndExcluding="2.15.0"),
                cpe("cpe:2.3:a:apache:log4j:2.0:beta9:*:*:*:*:*:*"),
                cpe("cpe:2.3:a:apache:log4j:2.0:beta9:*:*:*:*:*:*")]}]},  # listed twice: shown once
            {"operator": "AND", "nodes": [
                {"operator": "OR", "negate": False, "cpeMatch": [cpe("cpe:2.3:o:debian:debian_linux:10.0:*:*:*:*:*:*:*")]},
                {"operator": "OR", "negate": False, "cpeMatch": [
                    cpe("cpe:2.3:h:example:appliance:-:*:*:*:*:*:*:*", vulnerable=False)]}]}],
        "references": [{"url": u, "source": "security@apache.org"} for u in LOG4J_REFS],
    }
    heartbleed = {
        "id": "CVE-2014-0160", "published": "2014-04-07T22:55:03.893", "vulnStatus": "Modified",
        "descriptions": [{"lang": "en", "value": HEARTBLEED_TEXT}],
        "metrics": {
            # a CNA score listed before NVD's own: the Primary one is taken
            "cvssMetricV31": [cvss_v31(7.5, "HIGH", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N",
                                       source="cna@example.com", kind="Secondary"),
                              cvss_v31(7.5, "HIGH", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N")],
            "cvssMetricV2": [{"source": "nvd@nist.gov", "type": "Primary", "baseSeverity": "MEDIUM",
                              "cvssData": {"version": "2.0", "vectorString": "AV:N/AC:L/Au:N/C:P/I:N/A:N",
                                           "baseScore": 5.0}}]},
        "weaknesses": [{"source": "nvd@nist.gov", "type": "Primary",
                        "description": [{"lang": "en", "value": "CWE-125"}]}],
        "configurations": [{"nodes": [{"operator": "OR", "negate": False, "cpeMatch": [
            cpe("cpe:2.3:a:openssl:openssl:1.0.1:*:*:*:*:*:*:*"), cpe("cpe:2.3:a:openssl:openssl:1.0.1f:*:*:*:*:*:*:*")]}]}],
        "references": [{"url": "https://www.openssl.org/news/secadv/20140407.txt"}],
    }
    rejected = {"id": "CVE-2021-99901", "published": "2021-12-20T00:00:00.000", "vulnStatus": "Rejected",
                "descriptions": [{"lang": "en", "value": "Rejected reason: this candidate is a duplicate."}],
                "references": []}
    old_style_reject = {"id": "CVE-2021-99902", "published": "2021-12-20T00:00:00.000", "vulnStatus": "Modified",
                        "descriptions": [{"lang": "en", "value": "** REJECT ** DO NOT USE THIS CANDIDATE NUMBER."}]}
    return {"resultsPerPage": 4, "startIndex": 0, "totalResults": 4, "format": "NVD_CVE", "version": "2.0",
            "timestamp": "2024-08-01T00:00:00.000",
            "vulnerabilities": [{"cve": c} for c in (log4j, rejected, heartbleed, old_style_reject)]}


def cve5_webp() -> dict:
    return {
        "dataType": "CVE_RECORD", "dataVersion": "5.1",
        "cveMetadata": {"cveId": "CVE-2023-4863", "assignerOrgId": "ebfee7a2-0000-0000-0000-000000000000",
                        "assignerShortName": "Chrome", "state": "PUBLISHED", "dateReserved": "2023-09-12T00:00:00.000Z",
                        "datePublished": "2023-09-12T14:24:21.024Z", "dateUpdated": "2024-08-02T07:42:32.000Z"},
        "containers": {
            "cna": {
                "providerMetadata": {"orgId": "ebfee7a2-0000-0000-0000-000000000000", "shortName": "Chrome"},
                "title": "Heap buffer overflow in WebP",
                "descriptions": [{"lang": "en", "value": "Heap buffer overflow in libwebp in Google Chrome prior to "
                                  "116.0.5845.187 and libwebp 1.3.2 allowed a remote attacker to perform an out of "
                                  "bounds memory write via a crafted HTML page. (Chromium security severity: Critical)"}],
                "affected": [{"vendor": "Google", "product": "Chrome", "versions": [
                    {"version": "116.0.5845.187", "status": "affected", "lessThan": "116.0.5845.187",
                     "versionType": "custom"}]},
                    {"vendor": "Google", "product": "libwebp", "versions": [
                        {"version": "0", "status": "affected", "lessThan": "1.3.2", "versionType": "custom"},
                        {"version": "1.3.2", "status": "unaffected"}]}],
                "problemTypes": [{"descriptions": [{"type": "text", "lang": "en",
                                                    "description": "Heap buffer overflow"}]}],
                "references": [{"url": CHROME_RELEASE}, {"url": "https://crbug.com/1479274"}]},
            "adp": [{
                "providerMetadata": {"orgId": "134c704f-9b21-4f2e-91b3-4a467353bcc0", "shortName": "CISA-ADP"},
                "title": "CISA ADP Vulnrichment",
                "metrics": [{"cvssV3_1": {"version": "3.1", "baseScore": 8.8, "baseSeverity": "HIGH",
                                          "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H"}},
                            {"other": {"type": "ssvc", "content": {"options": [{"Exploitation": "active"}]}}}],
                "problemTypes": [{"descriptions": [{"type": "CWE", "cweId": "CWE-787", "lang": "en",
                                                    "description": "CWE-787 Out-of-bounds Write"}]}]}]}}


def cve5_log4j() -> dict:
    """Apache's record: CWEs with and without cweId, no CVSS from the CNA (an 'other' metric only)."""
    return {
        "dataType": "CVE_RECORD", "dataVersion": "5.1",
        "cveMetadata": {"cveId": "CVE-2021-44228", "state": "PUBLISHED", "datePublished": "2021-12-10T00:00:00.000Z"},
        "containers": {"cna": {
            "title": "Apache Log4j2 JNDI features do not protect against attacker controlled LDAP and other JNDI "
                     "related endpoints",
            "descriptions": [{"lang": "en-US", "value": LOG4J_TEXT}],
            "affected": [{"vendor": "Apache Software Foundation", "product": "Apache Log4j2", "versions": [
                {"version": "2.0-beta9", "status": "affected", "lessThan": "2.3.1", "versionType": "custom"},
                {"version": "2.4", "status": "affected", "lessThan": "2.12.2", "versionType": "custom"},
                {"version": "2.13.0", "status": "affected", "lessThanOrEqual": "2.15.0", "versionType": "custom"}]}],
            "problemTypes": [{"descriptions": [
                {"type": "CWE", "cweId": "CWE-502", "lang": "en",
                 "description": "CWE-502 Deserialization of Untrusted Data"},
                {"type": "CWE", "lang": "en", "description": "CWE-20 Improper Input Validation"}]}],
            "metrics": [{"other": {"type": "unknown", "content": {"other": "critical"}}}],
            "references": [{"url": "https://logging.apache.org/log4j/2.x/security.html"}]}}}


def cve5_rejected() -> dict:
    return {"dataType": "CVE_RECORD", "dataVersion": "5.1",
            "cveMetadata": {"cveId": "CVE-2023-99903", "state": "REJECTED", "dateRejected": "2023-10-01T00:00:00Z"},
            "containers": {"cna": {"rejectedReasons": [{"lang": "en", "value": "Duplicate of CVE-2023-4863."}]}}}


MITRE = "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5"
MARKING = "marking-definition--fa42a846-8d90-4e51-bc29-71d5b4802168"
T1059 = "attack-pattern--7385dfaf-6886-4229-9ecd-6fd678040830"
T1059_001 = "attack-pattern--970a3432-3237-47ad-bcca-7d8cbb217736"
T1086 = "attack-pattern--fb8d023d-0000-4000-8000-000000000086"
T1064 = "attack-pattern--7fd87010-0000-4000-8000-000000001064"
M1038 = "course-of-action--47e0e9fe-96ce-4f65-8bb1-8be1feacb5db"
G0016 = "intrusion-set--899ce53f-13a0-479b-a0e4-67d46e241542"
S0154 = "malware--aafea02e-ece5-4bb2-91a6-3bf8c7f38a39"


def stix_object(kind, stix_id, name=None, attack_id=None, **extra) -> dict:
    obj = {"type": kind, "spec_version": "2.1", "id": stix_id, "created": "2017-05-31T21:30:19.735Z",
           "modified": "2024-04-16T12:00:00.000Z", "created_by_ref": MITRE, "object_marking_refs": [MARKING]}
    if name:
        obj["name"] = name
    if attack_id:
        path = {"attack-pattern": "techniques", "course-of-action": "mitigations", "intrusion-set": "groups"}.get(
            kind, "software")
        obj["external_references"] = [{"source_name": "mitre-attack", "external_id": attack_id,
                                       "url": f"https://attack.mitre.org/{path}/{attack_id.replace('.', '/')}"}]
    return obj | extra


def relationship(n, rel_type, source, target, description="") -> dict:
    return stix_object("relationship", f"relationship--00000000-0000-4000-8000-{n:012d}", relationship_type=rel_type,
                       source_ref=source, target_ref=target, **({"description": description} if description else {}))


def execution(kind="mitre-attack"):
    return [{"kill_chain_name": kind, "phase_name": "execution"}]


def attack_bundle() -> dict:
    objects = [
        {"type": "marking-definition", "spec_version": "2.1", "id": MARKING, "created": "2017-06-01T00:00:00.000Z",
         "definition_type": "statement", "definition": {"statement": "Copyright 2015-2024, The MITRE Corporation."}},
        {"type": "identity", "spec_version": "2.1", "id": MITRE, "name": "The MITRE Corporation",
         "identity_class": "organization"},
        stix_object("x-mitre-tactic", "x-mitre-tactic--4ca45d45-df4d-4613-8980-bac22d278fa5", "Execution", "TA0002",
                    x_mitre_shortname="execution"),
        stix_object("x-mitre-matrix", "x-mitre-matrix--eafc1b4c-5e56-4965-bd4e-66a6a89c88cc", "Enterprise ATT&CK",
                    "enterprise-attack", tactic_refs=["x-mitre-tactic--4ca45d45-df4d-4613-8980-bac22d278fa5"]),
        stix_object("attack-pattern", T1059, "Command and Scripting Interpreter", "T1059",
                    description="Adversaries may abuse command and script interpreters to execute commands, scripts, "
                                "or binaries.(Citation: Wikipedia Command-Line Interface)",
                    kill_chain_phases=execution(), x_mitre_platforms=["Linux", "macOS", "Windows", "Network"],
                    x_mitre_detection="Monitor command-line arguments for script execution.",
                    x_mitre_is_subtechnique=False),
        stix_object("attack-pattern", T1059_001, "PowerShell", "T1059.001",
                    description="Adversaries may abuse PowerShell commands and scripts for execution.",
                    kill_chain_phases=execution(), x_mitre_platforms=["Windows"], x_mitre_is_subtechnique=True),
        stix_object("attack-pattern", T1086, "PowerShell", "T1086", revoked=True, kill_chain_phases=execution()),
        stix_object("attack-pattern", T1064, "Scripting", "T1064", x_mitre_deprecated=True,
                    kill_chain_phases=execution(), description="This technique has been deprecated."),
        stix_object("course-of-action", M1038, "Execution Prevention", "M1038",
                    description="Block execution of code on a system through application control, and/or script "
                                "blocking."),
        stix_object("intrusion-set", G0016, "APT29", "G0016", aliases=["APT29", "IRON RITUAL", "NOBELIUM", "Cozy Bear"],
                    description="[APT29](https://attack.mitre.org/groups/G0016) is threat group that has been "
                                "attributed to Russia's Foreign Intelligence Service (SVR).(Citation: White House "
                                "Imposing Costs RU Gov April 2021)"),
        stix_object("malware", S0154, "Cobalt Strike", "S0154", x_mitre_platforms=["Windows", "Linux", "macOS"],
                    description="Cobalt Strike is a commercial, full-featured, remote access tool."),
        relationship(1, "subtechnique-of", T1059_001, T1059),
        relationship(2, "mitigates", M1038, T1059,
                     "Use application control where appropriate.(Citation: NSA MS AppLocker)"),
        relationship(3, "uses", G0016, T1059_001, "[APT29](https://attack.mitre.org/groups/G0016) has used encoded "
                     "PowerShell scripts uploaded to CozyCar installations to download and install SeaDuke."),
        relationship(4, "uses", S0154, T1059_001, "Cobalt Strike can execute a payload on a remote host with "
                     "PowerShell."),
        relationship(5, "uses", G0016, S0154, "APT29 has used Cobalt Strike."),
        relationship(6, "revoked-by", T1086, T1059_001),  # from a revoked object: dropped
        relationship(7, "mitigates", M1038, T1064),  # to a deprecated object: dropped
        relationship(8, "uses", G0016, "attack-pattern--00000000-0000-4000-8000-00000000dead"),  # not in the bundle
        relationship(9, "mitigates", M1038, T1059_001, "Old advice.") | {"revoked": True},
    ]
    return {"type": "bundle", "id": "bundle--0f1d3a2f-0000-4000-8000-000000000001", "objects": objects}


def write(path, doc, compress=None):
    data = doc if isinstance(doc, bytes) else json.dumps(doc, indent=1).encode()
    path.write_bytes(gzip.compress(data) if compress == "gz" else bz2.compress(data) if compress == "bz2" else data)
    return path


def read(path, kind, **kw):
    counts = Counter()
    return list(read_feed(path, kind, counts=counts, **kw)), counts


# --- NVD -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, compress", [("nvdcve-2.0-2021.json", None), ("nvdcve-2.0-2021.json.gz", "gz"),
                                            ("nvdcve-2.0-2021.json.bz2", "bz2")])
def test_nvd_feed_is_one_document_per_cve_with_rejected_ones_counted(tmp_path, name, compress):
    records, counts = read(write(tmp_path / name, nvd_feed(), compress), "nvd")
    assert [r.meta["cve_id"] for r in records] == ["CVE-2021-44228", "CVE-2014-0160"]
    assert counts == {"records_nvd": 2, "skipped_rejected": 2}
    log4j = records[0]
    assert log4j.text.split("\n")[:5] == [
        "CVE-2021-44228",
        "Published: 2021-12-10",
        "Severity: CRITICAL (CVSS 3.1 base score 10.0, CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H)",
        "Weakness: CWE-502, CWE-400, CWE-20",
        ("Affected: apache log4j (>= 2.0.1, < 2.3.1 or >= 2.4, < 2.12.2 or >= 2.13.0, < 2.15.0 or 2.0); "
         "debian debian linux (10.0)")]
    assert f"\n\n{LOG4J_TEXT}\n\nReferences:\n- {LOG4J_REFS[0]}\n" in log4j.text
    assert "Las funciones" not in log4j.text and "appliance" not in log4j.text
    assert log4j.text.endswith(f"- {LOG4J_REFS[9]}\n- and 2 more (list capped at 10)")
    meta = dict(log4j.meta)
    fields = json.loads(meta.pop("fields"))
    assert meta == {"format": "nvd", "record_id": "CVE-2021-44228", "cve_id": "CVE-2021-44228",
                    "cwe_ids": ["CWE-502", "CWE-400", "CWE-20"], "cvss_score": 10.0,
                    "cvss_vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", "published": "2021-12-10T10:15:09.143"}
    assert fields == {"description": LOG4J_TEXT, "title": None, "severity": "CRITICAL", "cvss_version": "3.1",
                      "references": LOG4J_REFS, "affected": ["apache log4j", "debian debian linux"],
                      "affected_versions": {"apache log4j": [">= 2.0.1, < 2.3.1", ">= 2.4, < 2.12.2",
                                                             ">= 2.13.0, < 2.15.0", "2.0"],
                                            "debian debian linux": ["10.0"]},
                      "vuln_status": "Analyzed"}


def test_nvd_takes_the_newest_cvss_version_and_the_primary_score(tmp_path):
    records, _ = read(write(tmp_path / "feed.json", nvd_feed()), "nvd")
    heartbleed = records[1]
    assert heartbleed.meta["cvss_score"] == 7.5 and heartbleed.meta["cwe_ids"] == ["CWE-125"]
    assert "Severity: HIGH (CVSS 3.1 base score 7.5, CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N)" in heartbleed.text
    assert "Affected: openssl openssl (1.0.1 or 1.0.1f)" in heartbleed.text
    feed = nvd_feed()
    metrics = feed["vulnerabilities"][2]["cve"]["metrics"]
    del metrics["cvssMetricV31"]  # only CVSS 2.0 left: its severity sits beside cvssData
    records, _ = read(write(tmp_path / "v2.json", feed), "nvd")
    assert (records[1].meta["cvss_score"], records[1].meta["cvss_vector"]) == (5.0, "AV:N/AC:L/Au:N/C:P/I:N/A:N")
    assert "Severity: MEDIUM (CVSS 2.0 base score 5.0, AV:N/AC:L/Au:N/C:P/I:N/A:N)" in records[1].text
    del metrics["cvssMetricV2"]
    records, _ = read(write(tmp_path / "none.json", feed), "nvd")
    assert records[1].meta["cvss_score"] is None and "Severity" not in records[1].text
    assert json.loads(records[1].meta["fields"])["cvss_version"] is None


def test_optional_fields_of_odd_shape_are_left_out_not_fatal(tmp_path):
    feed = nvd_feed()
    cve = feed["vulnerabilities"][2]["cve"]
    cve |= {"metrics": "none", "weaknesses": [1, None, {"description": "CWE-125"}], "references": [None, {"url": 5}],
            "configurations": [{"nodes": [{"cpeMatch": ["cpe:2.3:a:openssl:openssl", 3, {"criteria": None}]}]}]}
    records, counts = read(write(tmp_path / "odd.json", feed), "nvd")
    assert counts == {"records_nvd": 2, "skipped_rejected": 2}
    assert records[1].text == f"CVE-2014-0160\nPublished: 2014-04-07\n\n{HEARTBLEED_TEXT}"
    assert (records[1].meta["cwe_ids"], records[1].meta["cvss_score"]) == ([], None)
    bundle = attack_bundle()
    bundle["objects"][4] |= {"kill_chain_phases": "execution", "x_mitre_platforms": ["Linux", 7], "name": 1059}
    by_id, _ = stix_records(tmp_path, bundle)
    assert by_id["T1059"].text.startswith("T1059: T1059\nType: technique (STIX attack-pattern)\nPlatforms: Linux\n")
    assert by_id["T1059"].meta["tactics"] == []


# --- CVE JSON 5 ----------------------------------------------------------------------------------------


def test_cve5_record_takes_cvss_and_cwe_from_the_cisa_adp_when_the_cna_has_none(tmp_path):
    (record,), counts = read(write(tmp_path / "CVE-2023-4863.json", cve5_webp()), "cve5")
    assert counts == {"records_cve5": 1}
    assert record.text.split("\n")[:5] == [
        "CVE-2023-4863: Heap buffer overflow in WebP",
        "Published: 2023-09-12",
        "Severity: HIGH (CVSS 3.1 base score 8.8, CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H)",
        "Weakness: CWE-787",
        "Affected: Google Chrome (< 116.0.5845.187); Google libwebp (< 1.3.2)"]
    assert "\n\nHeap buffer overflow in libwebp in Google Chrome prior to 116.0.5845.187" in record.text
    assert record.text.endswith("References:\n- https://chromereleases.googleblog.com/2023/09/"
                                "stable-channel-update-for-desktop_11.html\n- https://crbug.com/1479274")
    meta = dict(record.meta)
    fields = json.loads(meta.pop("fields"))
    assert meta == {"format": "cve5", "record_id": "CVE-2023-4863", "cve_id": "CVE-2023-4863", "cwe_ids": ["CWE-787"],
                    "cvss_score": 8.8, "cvss_vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
                    "published": "2023-09-12T14:24:21.024Z"}
    assert fields["severity"] == "HIGH" and fields["cvss_version"] == "3.1" and fields["vuln_status"] == "PUBLISHED"
    assert fields["affected"] == ["Google Chrome", "Google libwebp"] and fields["title"] == "Heap buffer overflow in WebP"
    assert fields["references"] == [CHROME_RELEASE, "https://crbug.com/1479274"]


def test_cve5_cna_values_win_over_the_adp(tmp_path):
    record = cve5_webp()
    record["containers"]["cna"]["metrics"] = [{"cvssV3_1": {"version": "3.1", "baseScore": 9.6, "baseSeverity":
                                               "CRITICAL", "vectorString": "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:H/I:H/A:H"}}]
    record["containers"]["cna"]["problemTypes"] = [{"descriptions": [{"type": "CWE", "cweId": "CWE-122", "lang": "en"}]}]
    (out,), _ = read(write(tmp_path / "r.json", record), "cve5")
    assert (out.meta["cvss_score"], out.meta["cwe_ids"]) == (9.6, ["CWE-122"])


def test_cve5_array_skips_rejected_records_and_reads_cwe_from_description_text(tmp_path):
    path = write(tmp_path / "records.json.gz", [cve5_log4j(), cve5_rejected(), cve5_webp()], "gz")
    records, counts = read(path, "cve5")
    assert [r.meta["record_id"] for r in records] == ["CVE-2021-44228", "CVE-2023-4863"]
    assert counts == {"records_cve5": 2, "skipped_rejected": 1}
    log4j = records[0]
    assert log4j.meta["cwe_ids"] == ["CWE-502", "CWE-20"] and log4j.meta["cvss_score"] is None
    assert log4j.meta["cvss_vector"] is None and "Severity" not in log4j.text
    assert ("Affected: Apache Software Foundation Apache Log4j2 (>= 2.0-beta9, < 2.3.1 or >= 2.4, < 2.12.2 or "
            ">= 2.13.0, <= 2.15.0)") in log4j.text
    assert LOG4J_TEXT in log4j.text  # lang "en-US" is English


# --- STIX / ATT&CK -------------------------------------------------------------------------------------


def stix_records(tmp_path, bundle=None, name="enterprise-attack.json", compress=None, **kw):
    records, counts = read(write(tmp_path / name, bundle or attack_bundle(), compress), "stix", **kw)
    return {r.meta["attack_id"]: r for r in records}, counts


def test_stix_bundle_is_one_document_per_technique_group_software_and_mitigation(tmp_path):
    by_id, counts = stix_records(tmp_path)
    assert list(by_id) == ["T1059", "T1059.001", "M1038", "G0016", "S0154"]
    assert counts == {"records_stix": 5, "skipped_revoked": 1, "skipped_deprecated": 1, "dropped_relationships": 4}
    t1059 = by_id["T1059"]
    assert t1059.text.split("\n") == [
        "T1059: Command and Scripting Interpreter",
        "Type: technique (STIX attack-pattern)",
        "Tactics: execution",
        "Platforms: Linux, macOS, Windows, Network",
        "",
        "Adversaries may abuse command and script interpreters to execute commands, scripts, or binaries.",
        "",
        "Detection: Monitor command-line arguments for script execution.",
        "",
        "Mitigations:",
        "- M1038 Execution Prevention: Use application control where appropriate.",
        "",
        "Sub-techniques:",
        "- T1059.001 PowerShell"]
    meta = dict(t1059.meta)
    fields = json.loads(meta.pop("fields"))
    assert meta == {"format": "stix", "record_id": T1059, "attack_id": "T1059", "tactics": ["execution"],
                    "platforms": ["Linux", "macOS", "Windows", "Network"]}
    assert fields["mitigations"] == [{"id": "M1038", "name": "Execution Prevention", "type": "course-of-action",
                                      "description": "Use application control where appropriate."}]
    assert fields["name"] == "Command and Scripting Interpreter" and fields["type"] == "attack-pattern"
    assert fields["detection"] == "Monitor command-line arguments for script execution."
    assert fields["used_by"] == [] and fields["uses"] == [] and fields["subtechnique_of"] == []


def test_stix_relationships_are_resolved_both_ways(tmp_path):
    by_id, _ = stix_records(tmp_path)
    sub = by_id["T1059.001"]
    assert "Sub-technique of: T1059 Command and Scripting Interpreter" in sub.text
    assert ("Used by:\n- G0016 APT29 (group): APT29 has used encoded PowerShell scripts uploaded to CozyCar "
            "installations to download and install SeaDuke.\n- S0154 Cobalt Strike (software): Cobalt "
            "Strike can execute a payload on a remote host with PowerShell.") in sub.text
    assert "Old advice" not in sub.text and "Mitigations" not in sub.text  # the revoked relationship is dropped
    assert [u["id"] for u in json.loads(sub.meta["fields"])["used_by"]] == ["G0016", "S0154"]
    apt29 = by_id["G0016"]
    assert apt29.text.startswith("G0016: APT29\nType: group (STIX intrusion-set)\nAlso known as: IRON RITUAL, "
                                 "NOBELIUM, Cozy Bear\n\nAPT29 is threat group that has been attributed to Russia's "
                                 "Foreign Intelligence Service (SVR).\n\nUses:\n- S0154 Cobalt Strike (software): "
                                 "APT29 has used Cobalt Strike.\n- T1059.001 PowerShell (technique): ")
    assert apt29.meta["tactics"] == [] and apt29.meta["platforms"] == []
    assert json.loads(apt29.meta["fields"])["aliases"] == ["IRON RITUAL", "NOBELIUM", "Cozy Bear"]
    m1038 = by_id["M1038"]
    assert m1038.text.endswith("Mitigates:\n- T1059 Command and Scripting Interpreter: Use application control where "
                               "appropriate.")
    assert "T1064" not in m1038.text  # deprecated technique left out
    assert "Used by:\n- G0016 APT29 (group): APT29 has used Cobalt Strike." in by_id["S0154"].text


def test_stix_lists_are_capped_in_the_text_but_complete_in_fields(tmp_path):
    bundle = attack_bundle()
    for n in range(60):
        group = f"intrusion-set--00000000-0000-4000-8000-{n:012d}"
        bundle["objects"] += [stix_object("intrusion-set", group, f"Group {n:02d}", f"G9{n:03d}"),
                              relationship(100 + n, "uses", group, T1059, "uses it")]
    by_id, counts = stix_records(tmp_path, bundle)
    assert counts["records_stix"] == 65
    text = by_id["T1059"].text
    assert "- G9049 Group 49 (group): uses it" in text and "G9050" not in text
    assert text.endswith("- and 10 more (list capped at 50)")
    assert len(json.loads(by_id["T1059"].meta["fields"])["used_by"]) == 60


def test_stix_2_0_bundle_with_spec_version_at_bundle_level(tmp_path):
    bundle = attack_bundle()
    bundle["spec_version"] = "2.0"
    for obj in bundle["objects"]:
        del obj["spec_version"]
    by_id, counts = stix_records(tmp_path, bundle, name="attack.json.gz", compress="gz")
    assert list(by_id) == ["T1059", "T1059.001", "M1038", "G0016", "S0154"] and counts["records_stix"] == 5


# --- sniffing ------------------------------------------------------------------------------------------


def test_sniff_goes_by_content_not_by_name(tmp_path):
    # misleading names: an NVD feed called stix.json, a bundle called nvdcve-2.0-2021.json
    files = {"stix.json": nvd_feed(), "nvdcve-2.0-2021.json": attack_bundle(), "bundle.json": cve5_webp(),
             "records.json": [cve5_webp(), cve5_log4j()]}
    kinds = {name: sniff_feed(write(tmp_path / name, doc).read_bytes()[:65536]) for name, doc in files.items()}
    assert kinds == {"stix.json": "nvd", "nvdcve-2.0-2021.json": "stix", "bundle.json": "cve5", "records.json": "cve5"}
    records, _ = read(tmp_path / "stix.json", sniff_feed((tmp_path / "stix.json").read_bytes()))
    assert [r.meta["format"] for r in records] == ["nvd", "nvd"]


def test_sniff_works_on_a_truncated_head_and_compact_json():
    nvd = json.dumps(nvd_feed(), separators=(",", ":")).encode()
    stix = json.dumps(attack_bundle()).encode()
    assert sniff_feed(nvd[:400]) == "nvd" and sniff_feed(stix[:200]) == "stix"
    assert sniff_feed(json.dumps(cve5_webp()).encode()[:150]) == "cve5"
    # key order other than the usual: objects first, then type and id
    bundle = attack_bundle()
    reordered = json.dumps({"objects": bundle["objects"], "type": "bundle", "id": bundle["id"]}).encode()
    assert sniff_feed(reordered[:300]) == "stix"
    # an API page whose vulnerabilities come before "format"
    page = json.dumps({"vulnerabilities": nvd_feed()["vulnerabilities"], "format": "NVD_CVE"}).encode()
    assert sniff_feed(b"\xef\xbb\xbf\n  " + page[:100]) == "nvd"


@pytest.mark.parametrize("head", [
    b'{"text": "a document that mentions \\"cveMetadata\\": {} and \\"type\\": \\"bundle\\""}\n{"text": "b"}\n',
    b'[{"text": "one"}, {"text": "two"}]', b'{"type": "report", "objects": []}', b"", b"plain text, not JSON",
    b'[{"type": "bundle", "objects": []}]', b'{"vulnerabilities": {"cve": 1}}'])
def test_sniff_says_none_for_other_json(head):
    assert sniff_feed(head) is None


# --- bad input -----------------------------------------------------------------------------------------


def bad_files(tmp):
    full = json.dumps(nvd_feed(), indent=1).encode()
    feed = nvd_feed()
    feed["vulnerabilities"] = {"cve": feed["vulnerabilities"][0]["cve"]}
    no_id = nvd_feed()
    del no_id["vulnerabilities"][2]["cve"]["id"]
    bad_spec = attack_bundle()
    bad_spec["objects"][5]["spec_version"] = "3.0"
    bad_bundle = attack_bundle() | {"spec_version": "3.0"}
    no_type = attack_bundle()
    del no_type["objects"][8]["type"]
    return {
        "truncated.json": (write(tmp / "truncated.json", full[: len(full) // 2]), "nvd",
                           ["truncated.json", "the JSON ends at line", "before the document is complete", "re-download"]),
        "cut-in-string.json": (write(tmp / "cut-in-string.json", full[: full.index(b"Apache Log4j2") + 5]), "nvd",
                               ["cut-in-string.json", "truncated download", "re-download"]),
        "truncated.json.gz": (write(tmp / "truncated.json.gz", gzip.compress(full)[:300]), "nvd",
                              ["truncated.json.gz", "truncated or corrupt gzip", "re-download"]),
        "notgzip.json.gz": (write(tmp / "notgzip.json.gz", full), "nvd", ["notgzip.json.gz", "corrupt gzip"]),
        "badutf8.json": (write(tmp / "badutf8.json", full.replace(b"Apache Log4j2 2.0", b"Apache \xff", 1)), "nvd",
                         ["badutf8.json", "invalid UTF-8 at byte offset", "convert the file to UTF-8"]),
        "empty.json": (write(tmp / "empty.json", b" \n"), "nvd", ["empty.json", "empty file", "remove it"]),
        "malformed.json": (write(tmp / "malformed.json", b'{"vulnerabilities": [}, 3]'), "nvd",
                           ["malformed.json", "malformed JSON", "line 1 column 22"]),
        "lines.json": (write(tmp / "lines.json", b"{}\n{}\n"), "cve5",
                       ["lines.json", "a second JSON document starts", "a feed is one JSON document"]),
        "notalist.json": (write(tmp / "notalist.json", feed), "nvd",
                          ["notalist.json", "'vulnerabilities' is dict, expected a list"]),
        "noid.json": (write(tmp / "noid.json", no_id), "nvd",
                      ["noid.json: vulnerabilities[2]", "has no 'id'", "fix or remove the record"]),
        "nvd11.json": (write(tmp / "nvd11.json", {"CVE_data_type": "CVE", "CVE_Items": []}), "nvd",
                       ["nvd11.json", "NVD 1.1", "download the CVE JSON 2.0 feed"]),
        "stix-as-nvd.json": (write(tmp / "stix-as-nvd.json", attack_bundle()), "nvd",
                             ["stix-as-nvd.json", "not an NVD CVE JSON 2.0 feed"]),
        "nvd-as-cve5.json": (write(tmp / "nvd-as-cve5.json", nvd_feed()), "cve5",
                             ["nvd-as-cve5.json", "not a CVE JSON 5 record"]),
        "nometadata.json": (write(tmp / "nometadata.json", [cve5_webp(), {"dataType": "CVE_RECORD"}]), "cve5",
                            ["nometadata.json: [1]", "no 'cveMetadata.cveId'"]),
        "spec3.json": (write(tmp / "spec3.json", bad_spec), "stix",
                       ["spec3.json: objects[5]", T1059_001, "spec_version '3.0'", "STIX 2.0 and 2.1"]),
        "bundle3.json": (write(tmp / "bundle3.json", bad_bundle), "stix",
                         ["bundle3.json: bundle: STIX spec_version '3.0'", "use a 2.x export"]),
        "notype.json": (write(tmp / "notype.json", no_type), "stix", ["notype.json: objects[8]", "missing 'type'"]),
        "notbundle.json": (write(tmp / "notbundle.json", [1, 2]), "stix", ["notbundle.json", "not a STIX bundle"]),
    }


def test_bad_input_is_one_line_naming_the_file_and_record(tmp_path):
    for name, (path, kind, needles) in bad_files(tmp_path).items():
        with pytest.raises(UserError) as e:
            list(read_feed(path, kind))
        message = str(e.value)
        assert "\n" not in message and all(n in message for n in needles), (name, message)
        assert str(tmp_path) in message, (name, message)


def test_a_feed_larger_than_max_bytes_is_refused(tmp_path):
    data = json.dumps(nvd_feed()).encode()
    for name, compress in (("big.json", None), ("big.json.gz", "gz")):
        with pytest.raises(UserError, match=rf"{name}: larger than max_bytes \(1000\); .* raise max_bytes"):
            list(read_feed(write(tmp_path / name, data, compress), "nvd", max_bytes=1000))
    assert len(list(read_feed(tmp_path / "big.json.gz", "nvd", max_bytes=len(data)))) == 2


def test_with_on_error_a_bad_record_is_reported_and_skipped(tmp_path):
    feed = nvd_feed()
    del feed["vulnerabilities"][2]["cve"]["id"]
    feed["vulnerabilities"].append("not an object")
    errors = []
    records, counts = read(write(tmp_path / "feed.json", feed), "nvd", on_error=errors.append)
    assert [r.meta["cve_id"] for r in records] == ["CVE-2021-44228"]
    assert counts == {"records_nvd": 1, "skipped_rejected": 2, "skipped_bad_record": 2}
    assert [str(e).split(": ", 1)[1].split(";")[0] for e in errors] == [
        "vulnerabilities[2]: the 'cve' object has no 'id'", "vulnerabilities[4]: no 'cve' object"]
    bundle = attack_bundle()
    del bundle["objects"][10]["id"]  # the malware object
    del bundle["objects"][14]["target_ref"]
    errors = []
    by_id, counts = stix_records(tmp_path, bundle, on_error=errors.append)
    assert list(by_id) == ["T1059", "T1059.001", "M1038", "G0016"]
    assert counts["skipped_bad_record"] == 2 and counts["dropped_relationships"] == 5  # two more point at S0154
    assert "objects[10]: missing 'id'" in str(errors[0])
    assert ("objects[14] (relationship--00000000-0000-4000-8000-000000000004): relationship missing 'target_ref'"
            in str(errors[1]))


def test_with_on_error_a_bad_file_still_raises(tmp_path):
    path = write(tmp_path / "cut.json", json.dumps(nvd_feed()).encode()[:500])
    with pytest.raises(UserError, match="cut.json: the JSON ends at line 1 column 467 before"):
        list(read_feed(path, "nvd", on_error=lambda e: None))
    bundle = copy.deepcopy(attack_bundle())
    bundle["objects"][4]["spec_version"] = "3.0"
    with pytest.raises(UserError, match=r"objects\[4\] \(attack-pattern--7385dfaf"):
        list(read_feed(write(tmp_path / "b.json", bundle), "stix", on_error=lambda e: None))
