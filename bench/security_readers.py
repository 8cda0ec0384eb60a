"""The security readers (issue #18) on real-shaped synthetic inputs, each beside the floor or peer any reader pays.

Inputs, `--size-mb` each (deterministic for a `--seed`), written to a temporary folder and removed afterwards:
  nvd      an NVD CVE JSON 2.0 feed (compact JSON, as the API returns it): varied descriptions, CPE matches with
           version ranges, CVSS 4.0/3.1/2.0 metrics, CWEs, references; some Rejected, some awaiting analysis.
  stix     an ATT&CK-shaped STIX 2.1 bundle (indented by 4, as attack-stix-data publishes it): tactics, techniques
           and sub-techniques, groups, malware and tools, mitigations, and the uses / mitigates / subtechnique-of
           relationships in ATT&CK's proportions (about 4 relationships per object); a few revoked or deprecated.
  syslog   RFC 3164 auth/kern/cron lines as a central rsyslog collector writes them: hundreds of hosts over days,
           bursts of sshd brute force, logins, sudo, cron sessions, UFW blocks, OOM kills, interleaved by time.
  jsonlog  Filebeat-style ECS JSON lines (nginx access, an API service, an auth service) over many hosts.
  warc     a Common Crawl-shaped WARC (one gzip member per record; warcinfo, then request / response / metadata per
           capture): HTML pages wrapped in site boilerplate (head scripts and styles, navigation, sidebar, footer,
           cookie banner) around real prose that ships with Python (pydoc topics and long stdlib docstrings in
           English; the Chinese, Japanese and Korean texts of the stdlib's CJK codec tests, sent in their legacy
           charsets); some redirects, 404s and images. Its size is the uncompressed WARC.

Contenders, timed on the same file, best of `--repeats` (alternated), MB/s of the (uncompressed) input:
  nvd, stix      read_feed vs `json.load` of the file (the floor: every reader parses the JSON).
  syslog         read_log vs `for line in open(...)` + a regex match of the RFC 3164 header (the floor).
  jsonlog        read_log vs `for line in open(...)` + `json.loads` (the floor).
  warc           read_warc (fastwarc + resiliparse main text + py3langid) vs datatrove's WarcReader (warcio) alone
                 and followed by its Trafilatura extractor (favour_precision, as datatrove's Common Crawl pipeline
                 runs it, in its sandbox process). Also read_warc with language ID stubbed, and fastwarc reading the
                 records' payloads alone, to show where the time goes.
Prints one JSON line.

    PYTHONPATH=src .venv/bin/python bench/security_readers.py [--size-mb 20] [--repeats 3] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import random
import re
import shutil
import sys
import sysconfig
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))

MB = 1e6
START = 1764547200  # 2025-12-01T00:00:00Z: the logs start here


# --- shared vocabulary -----------------------------------------------------------------------------------

PRODUCTS = [("apache", "http_server"), ("apache", "tomcat"), ("apache", "struts"), ("openssl", "openssl"),
            ("linux", "linux_kernel"), ("microsoft", "windows_10"), ("microsoft", "windows_server_2019"),
            ("microsoft", "exchange_server"), ("google", "chrome"), ("mozilla", "firefox"), ("cisco", "ios_xe"),
            ("fortinet", "fortios"), ("vmware", "esxi"), ("oracle", "mysql"), ("postgresql", "postgresql"),
            ("php", "php"), ("python", "python"), ("nodejs", "node.js"), ("jenkins", "jenkins"), ("gitlab", "gitlab"),
            ("wordpress", "wordpress"), ("f5", "big-ip_local_traffic_manager"), ("paloaltonetworks", "pan-os"),
            ("ivanti", "connect_secure"), ("citrix", "netscaler_application_delivery_controller"),
            ("atlassian", "confluence_server"), ("elastic", "kibana"), ("redis", "redis"), ("f5", "nginx"),
            ("isc", "bind"), ("samba", "samba"), ("sudo_project", "sudo"), ("openbsd", "openssh"),
            ("zyxel", "usg_flex_100"), ("qnap", "qts"), ("sonicwall", "sma_100"), ("grafana", "grafana"),
            ("libexpat_project", "libexpat"), ("curl", "libcurl"), ("imagemagick", "imagemagick")]
# (CWE, weakness phrase, what the attacker can do; {p} a parameter, {i} an input)
WEAKNESSES = [
    ("CWE-79", "Cross-site scripting (XSS) vulnerability", "inject arbitrary web script or HTML via the {p} parameter"),
    ("CWE-89", "SQL injection vulnerability", "execute arbitrary SQL commands via the {p} parameter"),
    ("CWE-787", "Out-of-bounds write", ("cause a denial of service (memory corruption) or possibly execute arbitrary "
                                       "code via a crafted {i}")),
    ("CWE-125", "Out-of-bounds read", "obtain sensitive information from process memory via a crafted {i}"),
    ("CWE-416", "Use-after-free", "execute arbitrary code via a crafted {i}"),
    ("CWE-22", "Directory traversal vulnerability", "read arbitrary files via a .. (dot dot) in the {p} parameter"),
    ("CWE-78", "OS command injection vulnerability", ("execute arbitrary commands via shell metacharacters in the {p} "
                                                     "parameter")),
    ("CWE-352", "Cross-site request forgery (CSRF) vulnerability", ("hijack the authentication of administrators for "
                                                                   "requests that change the {p} setting")),
    ("CWE-287", "Improper authentication", "bypass authentication and obtain administrative access via a crafted {i}"),
    ("CWE-502", "Deserialization of untrusted data", "execute arbitrary code via a crafted serialized {i}"),
    ("CWE-400", "Uncontrolled resource consumption", "cause a denial of service (CPU consumption) via a crafted {i}"),
    ("CWE-476", "NULL pointer dereference", "cause a denial of service (daemon crash) via a crafted {i}"),
    ("CWE-918", "Server-side request forgery (SSRF)", ("make the server send requests to internal hosts via the {p} "
                                                      "parameter")),
    ("CWE-190", "Integer overflow", "cause a denial of service (heap corruption) via a large {i}"),
    ("CWE-862", "Missing authorization check", "read or modify other users' data via the {p} endpoint"),
    ("CWE-798", "Use of hard-coded credentials", "log in with a default account that cannot be disabled"),
]
COMPONENTS = ["web interface", "parser", "REST API", "kernel module", "admin console", "SMB server", "image decoder"]
PARAMS = ["id", "q", "redirect_url", "filename", "username", "page", "sort", "callback", "template", "lang", "path"]
INPUTS = ["HTTP request", "TLS handshake", "PDF file", "image file", "DNS response", "XML document", "packet",
          "archive", "font file", "JSON payload", "certificate", "SMB message"]
ATTACKERS = ["remote attackers", "a remote attacker", "authenticated users", "local users",
             "an unauthenticated, remote attacker", "remote authenticated users with the Editor role"]
EXTRA_SENTENCES = [
    "NOTE: this vulnerability exists because of an incomplete fix for CVE-{y}-{n}.",
    "NOTE: the vendor disputes this because the affected interface is documented as requiring trusted input.",
    "Exploitation requires that the {p} feature is enabled, which is not the default configuration.",
    "This issue affects all versions before the fixed release; the vendor recommends upgrading.",
    "The vulnerability is due to insufficient validation of user-supplied input in the {p} handler.",
    "A successful exploit could allow the attacker to execute commands with root privileges.",
    "This vulnerability is known to be exploited in the wild.",
    "Users are recommended to upgrade, which fixes the issue.",
]
REF_HOSTS = ["https://github.com/{v}/{p}/security/advisories/GHSA-{a}", ("https://www.openwall.com/lists/oss-security/"
             "{y}/0{m}/1{d}/{n}"), "https://security.netapp.com/advisory/ntap-{y}0{m}1{d}-000{d}/",
             "https://lists.debian.org/debian-lts-announce/{y}/0{m}/msg000{n}.html",
             "https://www.{v}.com/security/advisories/{v}-sa-{y}-{n}", "https://bugzilla.redhat.com/show_bug.cgi?id={n}{m}",
             "https://ubuntu.com/security/notices/USN-{n}-1", "https://www.cisa.gov/known-exploited-vulnerabilities-catalog"]


def prose_paragraphs() -> list[str]:
    """Real English prose that ships with Python (the same source as bench/data_pipeline.py), in paragraphs."""
    from test_quality_parity_datatrove import prose_corpus

    return [p.strip() for doc in prose_corpus(every=1) for p in doc.split("\n\n") if len(p.strip()) > 80]


def sentences_of(paragraphs: list[str]) -> list[str]:
    return [s.strip() + "." for p in paragraphs for s in re.split(r"\.\s+", p.replace("\n", " "))
            if 40 < len(s) < 300 and not s.lstrip().startswith((">>>", "..."))]


def fill(template: str, rng: random.Random) -> str:
    return template.format(p=rng.choice(PARAMS), i=rng.choice(INPUTS), y=rng.randint(2015, 2025),
                           n=rng.randint(1000, 49999), m=rng.randint(1, 9), d=rng.randint(0, 9),
                           v=rng.choice(PRODUCTS)[0], a=uuid.UUID(int=rng.getrandbits(128)).hex[:14])


def stix_id(kind: str, rng: random.Random) -> str:
    return f"{kind}--{uuid.UUID(int=rng.getrandbits(128), version=4)}"


def iso_time(seconds: float, ms: bool = True) -> str:
    t = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + (f".{int(seconds * 1000) % 1000:03d}" if ms else "")


# --- NVD CVE JSON 2.0 -------------------------------------------------------------------------------------

CVSS31 = {"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
          "UI": {"N": 0.85, "R": 0.62}, "CIA": {"H": 0.56, "L": 0.22, "N": 0.0}}


def cvss31(rng: random.Random) -> dict:
    """A random CVSS 3.1 vector and its base score by the specification's formula."""
    m = {"AV": rng.choice("NNNNALP"), "AC": rng.choice("LLLH"), "PR": rng.choice("NNLH"), "UI": rng.choice("NNR"),
         "S": rng.choice("UUUC"), "C": rng.choice("HHLN"), "I": rng.choice("HHLN"), "A": rng.choice("HHLN")}
    changed = m["S"] == "C"
    pr = {"N": 0.85, "L": 0.68 if changed else 0.62, "H": 0.5 if changed else 0.27}[m["PR"]]
    iss = 1 - math.prod(1 - CVSS31["CIA"][m[k]] for k in "CIA")
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploit = 8.22 * CVSS31["AV"][m["AV"]] * CVSS31["AC"][m["AC"]] * pr * CVSS31["UI"][m["UI"]]
    raw = 0.0 if impact <= 0 else min((1.08 if changed else 1) * (impact + exploit), 10)
    score = math.ceil(raw * 10 - 1e-9) / 10
    severity = ("NONE" if score == 0 else "LOW" if score < 4 else "MEDIUM" if score < 7 else "HIGH" if score < 9
                else "CRITICAL")
    vector = "CVSS:3.1/" + "/".join(f"{k}:{v}" for k, v in m.items())
    return {"version": "3.1", "vectorString": vector, "baseScore": score, "baseSeverity": severity,
            "attackVector": {"N": "NETWORK", "A": "ADJACENT_NETWORK", "L": "LOCAL", "P": "PHYSICAL"}[m["AV"]],
            "attackComplexity": "LOW" if m["AC"] == "L" else "HIGH", "scope": "CHANGED" if changed else "UNCHANGED"}


def nvd_metrics(rng: random.Random) -> dict:
    v31 = cvss31(rng)
    metrics = {"cvssMetricV31": [{"source": "nvd@nist.gov", "type": "Primary", "cvssData": v31,
                                  "exploitabilityScore": round(rng.uniform(0.5, 3.9), 1),
                                  "impactScore": round(rng.uniform(1.4, 6.0), 1)}]}
    if rng.random() < 0.3:  # a CNA's own score beside NVD's
        metrics["cvssMetricV31"].insert(0, {"source": "security@vendor.example", "type": "Secondary",
                                            "cvssData": cvss31(rng), "exploitabilityScore": 3.9, "impactScore": 5.9})
    if rng.random() < 0.4:
        score = round(rng.uniform(2.1, 10.0), 1)
        metrics["cvssMetricV2"] = [{"source": "nvd@nist.gov", "type": "Primary", "baseSeverity":
                                    "HIGH" if score >= 7 else "MEDIUM" if score >= 4 else "LOW",
                                    "cvssData": {"version": "2.0", "vectorString": "AV:N/AC:L/Au:N/C:P/I:P/A:P",
                                                 "baseScore": score}, "exploitabilityScore": 10.0}]
    if rng.random() < 0.15:
        metrics["cvssMetricV40"] = [{"source": "cna@vendor.example", "type": "Secondary", "cvssData": {
            "version": "4.0", "baseScore": round(rng.uniform(2.0, 10.0), 1), "baseSeverity": "HIGH",
            "vectorString": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}}]
    return metrics


def nvd_configurations(rng: random.Random, vendor: str, product: str) -> list:
    def match(v, p, vulnerable=True, **bounds):
        return {"vulnerable": vulnerable, "criteria": f"cpe:2.3:a:{v}:{p}:{bounds.pop('version', '*')}:*:*:*:*:*:*:*",
                "matchCriteriaId": str(uuid.UUID(int=rng.getrandbits(128))).upper(), **bounds}

    major = rng.randint(1, 20)
    matches = []
    for branch in range(rng.choice([1, 1, 2, 3, 5])):
        bounds = {"versionStartIncluding": f"{major + branch}.0"} if rng.random() < 0.6 else {}
        matches.append(match(vendor, product, versionEndExcluding=f"{major + branch}.{rng.randint(1, 30)}."
                                                                  f"{rng.randint(0, 9)}", **bounds))
    if rng.random() < 0.3:
        matches += [match(vendor, product, version=f"{major}.{k}.0") for k in range(rng.randint(1, 12))]
    configs = [{"nodes": [{"operator": "OR", "negate": False, "cpeMatch": matches}]}]
    if rng.random() < 0.2:  # vulnerable only when running on a platform
        os_v, os_p = rng.choice([("debian", "debian_linux"), ("fedoraproject", "fedora"), ("microsoft", "windows")])
        configs.append({"operator": "AND", "nodes": [
            {"operator": "OR", "negate": False, "cpeMatch": [match(vendor, product)]},
            {"operator": "OR", "negate": False, "cpeMatch": [match(os_v, os_p, vulnerable=False)]}]})
    return configs


def nvd_cve(rng: random.Random, n: int, prose: list[str]) -> dict:
    year = 2015 + n % 11
    vendor, product = rng.choice(PRODUCTS)
    cwe, weakness, impact = rng.choice(WEAKNESSES)
    name = f"{vendor.replace('_', ' ').title()} {product.replace('_', ' ')}"
    component = rng.choice(COMPONENTS)
    text = (f"{weakness} in the {component}"
            f" of {name} before {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 9)} allows "
            f"{rng.choice(ATTACKERS)} to {fill(impact, rng)}.")
    text += "".join(" " + fill(s, rng) for s in rng.sample(EXTRA_SENTENCES, rng.choice([0, 0, 1, 1, 2, 3])))
    if rng.random() < 0.1:  # a long vendor write-up
        text += " " + " ".join(rng.sample(prose, 3))
    status = rng.choices(["Analyzed", "Modified", "Awaiting Analysis", "Rejected"], [60, 25, 12, 3])[0]
    published = START - rng.randint(0, 3600 * 24 * 365 * 9)
    cve = {"id": f"CVE-{year}-{1000 + n}", "sourceIdentifier": f"security@{vendor}.example",
           "published": iso_time(published), "lastModified": iso_time(published + rng.randint(0, 9e7)),
           "vulnStatus": status, "cveTags": [],
           "descriptions": [{"lang": "en", "value": text}] + (
               [{"lang": "es", "value": "Vulnerabilidad en " + name + "."}] if rng.random() < 0.3 else [])}
    if status == "Rejected":
        cve["descriptions"] = [{"lang": "en", "value": "Rejected reason: This CVE ID is a duplicate."}]
        return {"cve": cve | {"references": []}}
    if status != "Awaiting Analysis":
        cve["metrics"] = nvd_metrics(rng)
        cve["weaknesses"] = [{"source": "nvd@nist.gov", "type": "Primary", "description": [
            {"lang": "en", "value": cwe if rng.random() < 0.9 else "NVD-CWE-Other"}]}]
        cve["configurations"] = nvd_configurations(rng, vendor, product)
    cve["references"] = [{"url": fill(rng.choice(REF_HOSTS), rng), "source": f"security@{vendor}.example",
                          **({"tags": ["Patch", "Vendor Advisory"]} if rng.random() < 0.5 else {})}
                         for _ in range(rng.choice([1, 2, 3, 4, 6, 9, 14]))]
    return {"cve": cve}


def write_nvd(path: Path, size: int, rng: random.Random, prose: list[str]) -> None:
    parts, total, n = [], 0, 0
    while total < size:
        part = json.dumps(nvd_cve(rng, n, prose))
        parts.append(part)
        total, n = total + len(part) + 2, n + 1
    head = json.dumps({"resultsPerPage": n, "startIndex": 0, "totalResults": n, "format": "NVD_CVE", "version": "2.0",
                       "timestamp": "2025-12-01T00:00:00.000"})[:-1]
    path.write_text(head + ', "vulnerabilities": [' + ", ".join(parts) + "]}", encoding="utf-8")


# --- STIX 2.1, ATT&CK-shaped ------------------------------------------------------------------------------

TACTICS = ["reconnaissance", "resource-development", "initial-access", "execution", "persistence",
           "privilege-escalation", "defense-evasion", "credential-access", "discovery", "lateral-movement",
           "collection", "command-and-control", "exfiltration", "impact"]
VERBS = ["abuse", "modify", "leverage", "create or modify", "execute", "inject code into", "steal", "hijack",
         "obfuscate", "enumerate", "exploit", "impersonate", "disable"]
OBJECTS = ["scheduled tasks", "command and script interpreters", "valid accounts", "web shells", "system services",
           "registry run keys", "process memory", "browser session cookies", "cloud instance metadata",
           "domain trust relationships", "DLL search order", "boot or logon scripts", "network share connections",
           "software deployment tools", "encrypted channels", "removable media", "email forwarding rules"]
PLATFORMS = ["Windows", "Linux", "macOS", "Network", "Containers", "IaaS", "SaaS", "Office Suite", "Identity Provider"]


def stix_base(kind: str, rng: random.Random, name: str, attack_id: str, created: str) -> dict:
    path = {"attack-pattern": "techniques", "course-of-action": "mitigations", "intrusion-set": "groups"}.get(
        kind, "software")
    return {"type": kind, "spec_version": "2.1", "id": stix_id(kind, rng), "created": created,
            "created_by_ref": "identity--c78cb6e5-0c4b-4611-8297-d1b8b55e40b5",
            "object_marking_refs": ["marking-definition--fa42a846-8d90-4e51-bc29-71d5b4802168"],
            "modified": "2025-04-15T19:58:01.000Z", "name": name,
            "x_mitre_version": f"{rng.randint(1, 3)}.{rng.randint(0, 3)}",
            "x_mitre_attack_spec_version": "3.2.0", "x_mitre_domains": ["enterprise-attack"],
            "external_references": [{"source_name": "mitre-attack", "external_id": attack_id,
                                     "url": f"https://attack.mitre.org/{path}/{attack_id.replace('.', '/')}"}] + [
                {"source_name": f"Vendor Report {rng.randint(2014, 2025)}-{k}",
                 "description": f"Threat Research Team. ({rng.randint(2014, 2025)}). Campaign analysis part {k}.",
                 "url": f"https://research.example.com/{rng.getrandbits(32):x}"} for k in range(rng.randint(0, 6))]}


def attack_prose(rng: random.Random, sentences: list[str], lead: str, k: tuple[int, int]) -> str:
    body = " ".join(rng.sample(sentences, rng.randint(*k)))
    cites = "".join(f"(Citation: Vendor Report {rng.randint(2014, 2025)}-{j})" for j in range(rng.randint(0, 3)))
    return f"{lead} {body}{cites}"


def attack_objects(rng: random.Random, scale: float, sentences: list[str]) -> list[dict]:
    """Objects and relationships in the proportions of ATT&CK Enterprise v16 at scale 1 (~25 k objects)."""
    created = "2017-05-31T21:30:19.735Z"
    count = {name: max(2, round(n * scale)) for name, n in
             (("technique", 200), ("sub", 430), ("group", 160), ("malware", 600), ("tool", 90), ("mitigation", 44))}
    objs = [stix_base("x-mitre-tactic", rng, t.replace("-", " ").title(), f"TA{40 + i:04d}", created)
            | {"x_mitre_shortname": t, "description": attack_prose(rng, sentences, "The adversary is trying to "
                                                                   f"{t.replace('-', ' ')}.", (1, 2))}
            for i, t in enumerate(TACTICS)]
    techniques, subs, children = [], [], Counter()
    for i in range(count["technique"] + count["sub"]):
        is_sub = i >= count["technique"]
        parent = rng.choice(techniques) if is_sub else None
        if is_sub:
            children[parent["id"]] += 1
        attack_id = (f"{parent['external_references'][0]['external_id']}.{children[parent['id']]:03d}" if is_sub
                     else f"T{1001 + i}")
        lead = f"Adversaries may {rng.choice(VERBS)} {rng.choice(OBJECTS)} to {rng.choice(TACTICS).replace('-', ' ')}."
        obj = stix_base("attack-pattern", rng, f"{rng.choice(VERBS).title()} {rng.choice(OBJECTS).title()}",
                        attack_id, created) | {
            "description": attack_prose(rng, sentences, lead, (2, 8)),
            "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": t}
                                  for t in rng.sample(TACTICS, rng.choice([1, 1, 2]))],
            "x_mitre_platforms": rng.sample(PLATFORMS, rng.randint(1, 4)), "x_mitre_is_subtechnique": is_sub,
            "x_mitre_detection": attack_prose(rng, sentences, "Monitor for unexpected use of this behaviour.", (1, 3)),
            "x_mitre_data_sources": ["Process: Process Creation", "Command: Command Execution"]}
        if rng.random() < 0.03:
            obj[rng.choice(["revoked", "x_mitre_deprecated"])] = True
        if is_sub:
            subs.append((obj, parent))
        else:
            techniques.append(obj)
    groups = [stix_base("intrusion-set", rng, f"APT{i + 1}", f"G{i + 1:04d}", created) | {
        "aliases": [f"APT{i + 1}", f"Group {rng.getrandbits(16):X}", f"{rng.choice(OBJECTS).split()[0].title()} Bear"],
        "description": attack_prose(rng, sentences, f"[APT{i + 1}](https://attack.mitre.org/groups/G{i + 1:04d}) is a "
                                    "threat group that has been active since at least 2008.", (2, 6))}
        for i in range(count["group"])]
    software = [stix_base(kind, rng, f"{kind.title()}{i}", f"S{i:04d}", created) | {
        "x_mitre_platforms": rng.sample(PLATFORMS[:3], rng.randint(1, 3)), "x_mitre_aliases": [f"{kind.title()}{i}"],
        "description": attack_prose(rng, sentences, f"{kind.title()}{i} is a {kind} used by several groups.", (1, 4))}
        for kind in ("malware", "tool") for i in range(count[kind])]
    mitigations = [stix_base("course-of-action", rng, f"Mitigation {i}", f"M{1001 + i}", created) | {
        "description": attack_prose(rng, sentences, "Use application control and configuration hardening.", (1, 3))}
        for i in range(count["mitigation"])]
    all_tech = techniques + [s for s, _ in subs]
    rels = [("subtechnique-of", s, p, "") for s, p in subs]
    for group in groups:
        for target in rng.sample(all_tech, min(len(all_tech), rng.randint(10, 60))) + rng.sample(software, 5):
            rels.append(("uses", group, target, attack_prose(rng, sentences, f"[{group['name']}](https://attack."
                                                             "mitre.org/groups/) has used this.", (0, 1))))
    for sw in software:
        for target in rng.sample(all_tech, min(len(all_tech), rng.randint(3, 25))):
            rels.append(("uses", sw, target, attack_prose(rng, sentences, f"{sw['name']} can do this.", (0, 1))))
    for tech in all_tech:
        for mitigation in rng.sample(mitigations, min(len(mitigations), rng.randint(0, 4))):
            rels.append(("mitigates", mitigation, tech, attack_prose(rng, sentences, "Restrict it.", (0, 1))))
    relationships = [{"type": "relationship", "spec_version": "2.1", "id": stix_id("relationship", rng),
                      "created": created, "modified": "2025-04-15T19:58:01.000Z", "relationship_type": kind,
                      "source_ref": src["id"], "target_ref": dst["id"], **({"description": d} if d else {}),
                      "x_mitre_attack_spec_version": "3.2.0"} for kind, src, dst, d in rels]
    return objs + all_tech + groups + software + mitigations + relationships


def write_stix(path: Path, size: int, rng: random.Random, sentences: list[str]) -> None:
    def bundle(scale: float, seed: int) -> str:
        objects = attack_objects(random.Random(seed), scale, sentences)
        return json.dumps({"type": "bundle", "id": "bundle--0f1d3a2f-0000-4000-8000-000000000001",
                           "objects": objects}, indent=4)

    seed = rng.getrandbits(32)
    probe = 0.05  # size grows linearly with the scale; measure a small bundle to pick it
    path.write_text(bundle(size / len(bundle(probe, seed)) * probe, seed), encoding="utf-8")


# --- syslog (RFC 3164) and ECS JSON lines -----------------------------------------------------------------

USERS = ["root", "admin", "test", "oracle", "ubuntu", "postgres", "git", "user", "guest", "ftp", "pi", "support"]
STAFF = ["deploy", "alice", "bob", "ansible", "backup", "carol"]
COMMANDS = ["/usr/bin/systemctl restart nginx", "/usr/bin/apt-get upgrade -y", "/usr/bin/journalctl -u sshd",
            "/bin/cat /var/log/auth.log", "/usr/sbin/reboot", "/usr/bin/docker ps"]


def ip(rng: random.Random) -> str:
    return f"{rng.choice([45, 61, 92, 103, 141, 185, 193, 203, 218])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
           f"{rng.randint(1, 254)}"


def syslog_event(rng: random.Random, host: str, pid: int) -> list[tuple[str, str]]:
    """One burst of (program[pid], message) lines on one host."""
    kind = rng.choices(["bruteforce", "login", "sudo", "cron", "ufw", "kernel", "systemd"], [30, 10, 8, 20, 22, 3, 7])[0]
    src, port = ip(rng), rng.randint(30000, 65000)
    if kind == "bruteforce":
        out = []
        for _ in range(rng.randint(1, 12)):
            user, port = rng.choice(USERS), port + 2
            out += [(f"sshd[{pid}]", f"Invalid user {user} from {src} port {port}"),
                    (f"sshd[{pid}]", f"Failed password for invalid user {user} from {src} port {port} ssh2"),
                    (f"sshd[{pid}]", f"Connection closed by invalid user {user} {src} port {port} [preauth]")]
            pid += 1
        return out
    if kind == "login":
        user = rng.choice(STAFF)
        return [(f"sshd[{pid}]", (f"Accepted publickey for {user} from {src} port {port} ssh2: ED25519 SHA256:"
                                 f"{rng.getrandbits(128):032x}")),
                (f"sshd[{pid}]", f"pam_unix(sshd:session): session opened for user {user}(uid=1000) by (uid=0)"),
                ("systemd-logind[612]", f"New session {pid % 9000} of user {user}.")]
    if kind == "sudo":
        user = rng.choice(STAFF)
        return [("sudo", (f"  {user} : TTY=pts/{rng.randint(0, 4)} ; PWD=/home/{user} ; USER=root ; COMMAND="
                         f"{rng.choice(COMMANDS)}")),
                ("sudo", f"pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid=1000)"),
                ("sudo", "pam_unix(sudo:session): session closed for user root")]
    if kind == "cron":
        return [(f"CRON[{pid}]", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"),
                (f"CRON[{pid}]", "(root) CMD (   cd / && run-parts --report /etc/cron.hourly)"),
                (f"CRON[{pid}]", "pam_unix(cron:session): session closed for user root")]
    if kind == "ufw":
        return [("kernel", (f"[{rng.uniform(1e3, 9e6):.6f}] [UFW BLOCK] IN=eth0 OUT= MAC=52:54:00:{rng.getrandbits(24):06x}"
                           f":fe:ff:08:00 SRC={ip(rng)} DST=10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)} LEN=60 TOS=0x00 "
                           f"PREC=0x00 TTL={rng.randint(40, 60)} ID={rng.randint(1, 65535)} DF PROTO=TCP SPT="
                           f"{rng.randint(1024, 65535)} DPT={rng.choice([22, 23, 445, 3389, 5900, 8080])} WINDOW=64240 "
                           "RES=0x00 SYN URGP=0")) for _ in range(rng.randint(1, 6))]
    if kind == "kernel":
        return [("kernel", (f"[{rng.uniform(1e3, 9e6):.6f}] Out of memory: Killed process {pid} (java) total-vm:"
                           f"{rng.randint(10**6, 10**7)}kB, anon-rss:{rng.randint(10**5, 10**6)}kB, file-rss:0kB, "
                           "shmem-rss:0kB, UID:1001 pgtables:9140kB oom_score_adj:0")),
                ("kernel", f"[{rng.uniform(1e3, 9e6):.6f}] oom_reaper: reaped process {pid} (java), now anon-rss:0kB")]
    return [("systemd[1]", "Starting Daily apt upgrade and clean activities..."),
            ("systemd[1]", "apt-daily-upgrade.service: Deactivated successfully."),
            ("systemd[1]", "Finished Daily apt upgrade and clean activities.")]


def log_hosts(rng: random.Random, n: int) -> list[str]:
    roles = ["web", "db", "app", "cache", "mail", "vpn", "k8s-node", "bastion", "ci"]
    return [f"{rng.choice(roles)}{i:03d}" for i in range(n)]


def write_syslog(path: Path, size: int, rng: random.Random) -> None:
    hosts, lines, total = log_hosts(rng, 300), [], 0
    t, step = float(START), 3 * 86400 / (size / 400)  # about 3 days at ~400 bytes per burst
    while total < size:
        t += rng.expovariate(1 / step)
        host = rng.choice(hosts)
        for k, (program, message) in enumerate(syslog_event(rng, host, rng.randint(1000, 99999))):
            stamp = time.gmtime(t + k * rng.random())
            line = f"{time.strftime('%b', stamp)} {stamp.tm_mday:2d} {time.strftime('%H:%M:%S', stamp)} {host} " \
                   f"{program}: {message}\n"
            lines.append(line)
            total += len(line)
    path.write_text("".join(lines), encoding="utf-8")


def ecs_line(rng: random.Random, t: float, host: str) -> dict:
    service = rng.choices(["nginx", "orders-api", "auth-service"], [6, 3, 1])[0]
    event = {"@timestamp": iso_time(t) + "Z", "host": {"name": f"{host}.prod.example.com",
                                                       "ip": [f"10.0.{rng.randint(0, 9)}.{rng.randint(2, 250)}"]},
             "service": {"name": service}, "agent": {"type": "filebeat", "version": "8.15.1"},
             "ecs": {"version": "8.11.0"}, "event": {"dataset": f"{service}.log"}}
    status = rng.choices([200, 200, 200, 301, 304, 401, 403, 404, 500, 502], k=1)[0]
    client = ip(rng)
    if service == "nginx":
        path = rng.choice(["/", "/login", "/api/v2/orders", "/static/app.js", "/wp-login.php", "/.env", "/health"])
        event["message"] = (f'{client} - - [{time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(t))}] "GET {path} '
                            f'HTTP/1.1" {status} {rng.randint(0, 90000)} "-" "Mozilla/5.0 (X11; Linux x86_64)"')
        event |= {"log": {"level": "info"}, "source": {"ip": client},
                  "http": {"request": {"method": "GET"}, "response": {"status_code": status}}, "url": {"path": path}}
    elif service == "orders-api":
        level = "error" if status >= 500 else "info"
        outcome = "failed: upstream timeout after 3000 ms" if level == "error" else "created"
        event["message"] = (f"order {rng.getrandbits(40):x} {outcome}"
                            f" for customer {rng.randint(1, 10**6)}")
        event |= {"log": {"level": level}, "trace": {"id": f"{rng.getrandbits(128):032x}"}}
    else:
        user = rng.choice(USERS + STAFF)
        ok = rng.random() < 0.7
        event["message"] = f"login {'succeeded' if ok else 'failed: bad password'} for {user} from {client}"
        event |= {"log": {"level": "info" if ok else "warn"}, "user": {"name": user}, "source": {"ip": client},
                  "event": {"dataset": "auth-service.log", "outcome": "success" if ok else "failure"}}
    return event


def write_jsonlog(path: Path, size: int, rng: random.Random) -> None:
    hosts, lines, total = log_hosts(rng, 120), [], 0
    t, step = float(START), 2 * 86400 / (size / 500)
    while total < size:
        t += rng.expovariate(1 / step)
        # a host ships a batch: Filebeat's lines arrive grouped by host
        host = rng.choice(hosts)
        for _ in range(rng.randint(1, 20)):
            t += rng.random() * 0.5
            line = json.dumps(ecs_line(rng, t, host)) + "\n"
            lines.append(line)
            total += len(line)
    path.write_text("".join(lines), encoding="utf-8")


# --- WARC, Common Crawl-shaped ----------------------------------------------------------------------------

CJK = {"zh": [("big5", "big5"), ("gb2312", "gb2312"), ("gbk", "gbk")], "ja": [("euc_jp", "euc-jp"),
       ("shift_jis", "shift_jis")], "ko": [("euc_kr", "euc-kr")]}
NAV = {"en": ["Home", "News", "Docs", "Blog", "Forum", "About", "Contact", "Careers", "Pricing", "Support"],
       "zh": ["首页", "新闻", "文档", "论坛", "关于我们", "联系我们"], "ja": ["ホーム", "ニュース", "ドキュメント", "お問い合わせ"],
       "ko": ["홈", "뉴스", "문서", "문의"]}
SCRIPT = ("window.dataLayer=window.dataLayer||[];function gtag(){dataLayer.push(arguments)}gtag('js',new Date());"
          "gtag('config','G-XXXXXXX');(function(w,d,s){var f=d.getElementsByTagName(s)[0],j=d.createElement(s);"
          "j.async=true;j.src='https://www.googletagmanager.com/gtm.js?id=GTM-XXXX';f.parentNode.insertBefore(j,f);})"
          "(window,document,'script');")
STYLE = ".nav{display:flex;gap:1rem}.nav a{color:#333;text-decoration:none}.sidebar{width:280px;float:right}" \
        ".footer{background:#222;color:#eee;padding:2rem}.cookie{position:fixed;bottom:0;left:0;right:0}"


def cjk_texts() -> dict[str, list[tuple[str, str]]]:
    """lang → [(text, charset)] from the stdlib's CJK codec test files (absent where the `test` package is not
    installed: then the WARC is English only)."""
    folder = Path(sysconfig.get_paths()["stdlib"]) / "test" / "cjkencodings"
    out = {}
    for lang, codecs in CJK.items():
        found = [((folder / f"{name}-utf8.txt").read_text(encoding="utf-8"), charset)
                 for name, charset in codecs if (folder / f"{name}-utf8.txt").is_file()]
        if found:
            out[lang] = found
    return out


def html_page(rng: random.Random, lang: str, title: str, paragraphs: list[str], site: str, charset: str) -> str:
    words = NAV[lang]
    nav = "".join(f'<li class="nav-item"><a href="/{k}/{w}">{w}</a></li>' for k, w in
                  enumerate(rng.sample(words, len(words)) * rng.randint(2, 5)))
    side = "".join(f'<li><a href="/tag/{rng.getrandbits(24):x}">{rng.choice(words)} {k}</a></li>'
                   for k in range(rng.randint(5, 40)))
    body = "".join(f"<pre><code>{p}</code></pre>" if p.startswith("    ") else f"<p>{p}</p>" for p in paragraphs)
    comments = "".join(f'<div class="comment"><b>user{k}</b><p>{rng.choice(words)}!</p></div>'
                       for k in range(rng.choice([0, 0, 3, 8])))
    # Inline scripts and page state make most of a page's bytes, in a long-tailed spread (median ~25 KB a page).
    scripts = "".join(f"<script>{SCRIPT * int(rng.lognormvariate(2.5, 1))}</script>" for _ in range(rng.randint(1, 4)))
    state = json.dumps({"props": [{"id": rng.getrandbits(32), "slug": rng.choice(words), "views": rng.randint(0, 9999)}
                                  for _ in range(int(rng.lognormvariate(3.5, 1)))]})
    scripts += f'<script id="__STATE__" type="application/json">{state}</script>'
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="{charset}"><title>{title} | {site}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="description" '
            f'content="{title}"><link rel="stylesheet" href="/css/main.{rng.getrandbits(32):x}.css">'
            f"<style>{STYLE * rng.randint(1, 8)}</style>{scripts}</head><body>"
            f'<div class="cookie">{" ".join(words)} cookies <button>OK</button></div>'
            f'<header><a class="logo" href="/">{site}</a><nav><ul class="nav">{nav}</ul></nav></header>'
            f'<div class="breadcrumb"><a href="/">{words[0]}</a> / <a href="/{words[1]}">{words[1]}</a></div>'
            f'<aside class="sidebar"><h3>{words[2]}</h3><ul>{side}</ul></aside>'
            f"<main><article><h1>{title}</h1>{body}</article><section class=\"comments\">{comments}</section></main>"
            f'<footer class="footer"><ul>{nav}</ul><p>Copyright 2025 {site}. All rights reserved. Privacy | Terms</p>'
            f"</footer></body></html>")


def warc_record(rng: random.Random, wtype: str, block: bytes, uri: str | None, content_type: str,
                extra: list[str] = ()) -> bytes:
    headers = ["WARC/1.0", f"WARC-Type: {wtype}", "WARC-Date: 2025-11-20T08:14:03Z",
               f"WARC-Record-ID: <urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>",
               f"Content-Length: {len(block)}", f"Content-Type: {content_type}", *extra]
    headers += [f"WARC-Target-URI: {uri}"] if uri else []
    return gzip.compress("\r\n".join(headers).encode() + b"\r\n\r\n" + block + b"\r\n\r\n", compresslevel=6)


def capture(rng: random.Random, uri: str, status: str, content_type: str, payload_type: str, body: bytes) -> list:
    host = uri.split("/")[2]
    request = f"GET /{uri.split('/', 3)[3]} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: CCBot/2.0\r\nAccept: text/html\r\n\r\n"
    http = (f"HTTP/1.1 {status}\r\nDate: Thu, 20 Nov 2025 08:14:03 GMT\r\nServer: nginx\r\nContent-Type: "
            f"{content_type}\r\nX-Crawler-Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    response = warc_record(rng, "response", http + body, uri, "application/http; msgtype=response",
                           [f"WARC-IP-Address: {ip(rng)}", f"WARC-Identified-Payload-Type: {payload_type}"])
    return [warc_record(rng, "request", request.encode(), uri, "application/http; msgtype=request"), response,
            warc_record(rng, "metadata", f"fetchTimeMs: {rng.randint(20, 900)}\r\n".encode(), uri,
                        "application/warc-fields")]


def web_page(rng: random.Random, n: int, paragraphs: list[str], cjk: dict) -> tuple[str, str, str, bytes]:
    """(uri, content type, payload type, body) of one capture."""
    roll = rng.random()
    if roll < 0.04:
        return f"https://cdn{n % 7}.example.net/img/{n}.jpg", "image/jpeg", "image/jpeg", rng.randbytes(4000)
    lang = rng.choices(["en", *cjk], [85, *[5] * len(cjk)])[0]
    site = f"{rng.choice(['blog', 'news', 'docs', 'forum', 'wiki'])}{n % 97}.example.{lang if lang != 'en' else 'com'}"
    if lang == "en":
        start = rng.randrange(len(paragraphs))
        text = paragraphs[start:start + rng.randint(2, 14)]
        title, charset = text[0][:60].split("\n")[0], "utf-8"
    else:
        sample, charset = rng.choice(cjk[lang])
        lines = [x for x in sample.split("\n") if x.strip()]
        text = ["".join(rng.sample(lines, len(lines))) for _ in range(rng.randint(1, 3))]
        title = lines[0][:30]
    html = html_page(rng, lang, title, text, site, charset).encode(charset, errors="replace")
    declared = f"text/html; charset={charset}" if lang == "en" or rng.random() < 0.5 else "text/html"
    return f"https://{site}/{rng.choice(['post', 'article', 'p'])}/{n}", declared, "text/html", html


def write_warc(path: Path, size: int, rng: random.Random, paragraphs: list[str]) -> dict[str, float]:
    """Writes the per-record-gzip WARC; returns its uncompressed size, the HTML 200 pages and their mean size."""
    cjk, n, total, html = cjk_texts(), 0, 0, []
    info = b"software: synthetic (bench/security_readers.py)\r\nformat: WARC File Format 1.0\r\nisPartOf: CC-MAIN-2025-47\r\n"
    members = [warc_record(rng, "warcinfo", info, None, "application/warc-fields",
                           ["WARC-Filename: CC-MAIN-20251120-00000.warc.gz"])]
    while total < size:
        uri, content_type, payload_type, body = web_page(rng, n, paragraphs, cjk)
        status = rng.choices(["200 OK", "301 Moved Permanently", "404 Not Found"], [92, 4, 4])[0]
        if status.startswith("301"):
            body = f'<html><body><a href="{uri}/">Moved</a></body></html>'.encode()
        elif status.startswith("200") and payload_type == "text/html":
            html.append(len(body))
        members += capture(rng, uri, status, content_type, payload_type, body)
        total, n = total + len(body) + 1200, n + 1  # + WARC and HTTP headers of the three records
    path.write_bytes(b"".join(members))
    return {"bytes": sum(len(gzip.decompress(m)) for m in members), "pages": len(html),
            "html_kb_per_page": round(sum(html) / len(html) / 1e3, 1)}


def build_inputs(root: Path, size_mb: float, seed: int) -> dict[str, dict]:
    size = int(size_mb * MB)
    paragraphs = prose_paragraphs()
    sentences = sentences_of(paragraphs)
    files = {"nvd": root / "nvdcve-2.0-synthetic.json", "stix": root / "enterprise-attack-synthetic.json",
             "syslog": root / "auth.log", "jsonlog": root / "filebeat.ndjson",
             "warc": root / "CC-MAIN-20251120-00000.warc.gz"}
    write_nvd(files["nvd"], size, random.Random(seed), sentences)
    write_stix(files["stix"], size, random.Random(seed + 1), sentences)
    write_syslog(files["syslog"], size, random.Random(seed + 2))
    write_jsonlog(files["jsonlog"], size, random.Random(seed + 3))
    warc_bytes = write_warc(files["warc"], size, random.Random(seed + 4), paragraphs)
    out = {name: {"path": path, "bytes": path.stat().st_size} for name, path in files.items()}
    out["warc"] |= {"gzip_bytes": out["warc"]["bytes"], "bytes": warc_bytes["bytes"], "pages": warc_bytes["pages"],
                    "html_kb_per_page": warc_bytes["html_kb_per_page"]}
    return out


# --- contenders -------------------------------------------------------------------------------------------


def ours(name: str, path: Path) -> int | tuple[int, int]:
    from megalang.data.feeds import read_feed
    from megalang.data.logs import read_log
    from megalang.data.web import read_warc

    if name in ("nvd", "stix"):
        return sum(1 for _ in read_feed(path, name))
    if name in ("syslog", "jsonlog"):
        return sum(1 for _ in read_log(path, name, year=2025))
    return counted(r.text for r in read_warc(path, "warc"))


def counted(texts) -> tuple[int, int]:
    """(documents, characters of text) of an iterable of texts."""
    n = chars = 0
    for text in texts:
        n, chars = n + 1, chars + len(text)
    return n, chars


def ours_without_language_id(path: Path) -> int:
    from megalang.data import web

    real = web.identify_language
    web.identify_language = lambda text: ("en", 1.0)
    try:
        return counted(r.text for r in web.read_warc(path, "warc"))
    finally:
        web.identify_language = real


def fastwarc_payloads(path: Path) -> int:
    """Decompressing and iterating the records and reading every response's bytes: what any WARC reader pays."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType

    with open(path, "rb") as f:
        return sum(len(rec.reader.read()) > 0 for rec in ArchiveIterator(f, record_types=WarcRecordType.response,
                                                                          parse_http=False))


SYSLOG_HEADER = re.compile(r"(\w{3}) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\S+) ([^\s\[:]+)")


def floor(name: str, path: Path) -> int:
    if name in ("nvd", "stix"):
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return len(doc["vulnerabilities"] if name == "nvd" else doc["objects"])
    if name == "syslog":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if SYSLOG_HEADER.match(line))
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if json.loads(line))


def datatrove_warc(path: Path, extract: bool) -> int:
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader

    docs = WarcReader(str(path.parent), glob_pattern=path.name).run()
    if extract:  # datatrove's Common Crawl (FineWeb) pipeline: WarcReader → ... → Trafilatura(favour_precision=True)
        docs = Trafilatura(favour_precision=True, timeout=10.0).run(docs)
    return counted(doc.text for doc in docs)


def contenders(inputs: dict[str, dict], with_datatrove: bool) -> list[tuple[str, str, object]]:
    """(input, contender name, zero-argument callable returning documents) in the order they run."""
    runs = []
    for name, info in inputs.items():
        path = info["path"]
        runs.append((name, "megalang", lambda n=name, p=path: ours(n, p)))
        if name != "warc":
            runs.append((name, "floor", lambda n=name, p=path: floor(n, p)))
    warc = inputs["warc"]["path"]
    runs += [("warc", "megalang_no_language_id", lambda: ours_without_language_id(warc)),
             ("warc", "fastwarc_payloads", lambda: fastwarc_payloads(warc))]
    if with_datatrove:
        runs += [("warc", "datatrove_warcreader", lambda: datatrove_warc(warc, extract=False)),
                 ("warc", "datatrove_trafilatura", lambda: datatrove_warc(warc, extract=True))]
    return runs


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("fastwarc", "resiliparse", "py3langid", "datatrove", "warcio", "trafilatura"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=20.0, help="size of each input (the WARC: uncompressed)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each contender; the fastest is kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-chain", dest="chain", action="store_false",
                    help="skip the whole `data prepare` run over all five inputs")
    args = ap.parse_args()
    ver = versions()
    with_datatrove = ver["datatrove"] is not None and ver["trafilatura"] is not None and ver["warcio"] is not None
    warm_up(with_datatrove)

    root = Path(tempfile.mkdtemp(prefix="bench-security-"))
    try:
        started = time.perf_counter()
        inputs = build_inputs(root, args.size_mb, args.seed)
        build_s = time.perf_counter() - started
        sniffed = sniff_all(inputs)
        best: dict[tuple[str, str], float] = {}
        docs: dict[tuple[str, str], int] = {}
        chars: dict[tuple[str, str], int] = {}
        for _ in range(args.repeats):
            for name, who, run in contenders(inputs, with_datatrove):
                t0 = time.perf_counter()
                docs[name, who] = run()
                if isinstance(docs[name, who], tuple):  # (documents, characters of text out)
                    docs[name, who], chars[name, who] = docs[name, who]
                best[name, who] = min(best.get((name, who), math.inf), time.perf_counter() - t0)
        result = report(inputs, best, docs, chars)
        if args.chain:
            result["security_chain"] = chain(inputs, root / "prepared")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"bench": "security_readers", "size_mb": args.size_mb, "repeats": args.repeats, "seed": args.seed,
                      "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0], "build_seconds": round(build_s, 1),
                      "sniffed": sniffed, **result, "versions": ver,
                      **({} if with_datatrove else {"datatrove": "not installed: peer skipped"})}))


def chain(inputs: dict[str, dict], out: Path) -> dict:
    """`data prepare` over all five inputs on one worker, as a team would run it on its feeds, logs and crawl:
    content sniffing, the readers, normalize → length → quality (security chain for feeds and logs, web chain for
    the pages) → scrub (per kind) → exact dedup, and the Parquet output. MB/s of the uncompressed input."""
    from megalang.config import PrepareConfig
    from megalang.data.pipeline import prepare

    cfg = PrepareConfig(inputs=[str(info["path"]) for info in inputs.values()], out=str(out), workers=1,
                        steps=["normalize", "length", "quality", "scrub", "exact_dedup"], progress=False, log_year=2025)
    total = sum(info["bytes"] for info in inputs.values())
    t0 = time.perf_counter()
    manifest = prepare(cfg)
    seconds = time.perf_counter() - t0
    counts = manifest["counts"]
    return {"mb": round(total / MB, 1), "seconds": round(seconds, 2), "mb_per_s": round(total / MB / seconds, 2),
            "documents_in": counts["documents_in"], "documents_out": counts["documents_out"],
            "documents_by_kind": counts["documents_by_kind"], "scrubbed": manifest.get("scrubbed", {})}


def warm_up(with_datatrove: bool) -> None:
    """Imports and py3langid's model load (0.5 s) happen once per process, not per file: they stay out of the
    timings."""
    import logging

    from megalang.data.web import identify_language

    identify_language("warm up the language model")
    logging.disable(logging.WARNING)
    if with_datatrove:
        import datatrove.pipeline.readers  # noqa: F401
        import trafilatura  # noqa: F401
        from loguru import logger

        logger.remove()  # datatrove logs every step through loguru (its handler is added on import)


def sniff_all(inputs: dict[str, dict]) -> dict[str, str | None]:
    """What the readers' sniffers say of each input's head (each must name its own kind)."""
    from megalang.data.feeds import sniff_feed
    from megalang.data.logs import sniff_log
    from megalang.data.web import sniff_warc

    def head(path: Path) -> bytes:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            return f.read(64 << 10)

    out = {name: (sniff_feed if name in ("nvd", "stix") else sniff_log if name in ("syslog", "jsonlog")
                  else sniff_warc)(head(info["path"])) for name, info in inputs.items()}
    wrong = {name: kind for name, kind in out.items() if kind != name}
    assert not wrong, f"sniffers misread the synthetic inputs: {wrong}"
    return out


def report(inputs: dict[str, dict], best: dict, docs: dict, chars: dict) -> dict:
    out = {}
    for name, info in inputs.items():
        entry = {"mb": round(info["bytes"] / MB, 2)} | {k: v for k, v in info.items()
                                                          if k in ("pages", "html_kb_per_page")}
        if "gzip_bytes" in info:
            entry["gzip_mb"] = round(info["gzip_bytes"] / MB, 2)
        for (input_name, who), seconds in best.items():
            if input_name == name:
                # floors count what they parse (feed records or STIX objects, lines, responses), not documents
                unit = "items" if who in ("floor", "fastwarc_payloads") else "docs"
                entry[who] = {"seconds": round(seconds, 3), "mb_s": round(info["bytes"] / MB / seconds, 2),
                              unit: docs[name, who], f"{unit}_s": round(docs[name, who] / seconds, 1)}
                if (name, who) in chars:  # the WARC readers: how much text a document keeps
                    entry[who]["chars_per_doc"] = round(chars[name, who] / max(docs[name, who], 1))
        if "floor" in entry:
            entry["floor_share"] = round(entry["floor"]["seconds"] / entry["megalang"]["seconds"], 3)
        out[name] = entry
    warc = out["warc"]
    full = warc["megalang"]["seconds"]
    warc["language_id_share"] = round(1 - warc["megalang_no_language_id"]["seconds"] / full, 3)
    warc["payload_read_share"] = round(warc["fastwarc_payloads"]["seconds"] / full, 3)
    if "datatrove_trafilatura" in warc:
        warc["speedup_vs_datatrove_trafilatura"] = round(warc["datatrove_trafilatura"]["seconds"] / full, 2)
    return out


if __name__ == "__main__":
    main()
