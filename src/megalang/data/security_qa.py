"""Questions and answers about one CVE or ATT&CK technique, every answer taken from the record's own fields
(data/records.py) or from a fixed table of published definitions (CVSS metric values, CWE names); `data sft-from`
(data/sft_from.py) writes them as chats.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from megalang.data.feeds import DOCUMENT_TYPES

CVE_FORMATS = ("nvd", "cve5")
CVE_QUESTIONS = ("cwe", "severity", "affected")
TECHNIQUE_QUESTIONS = ("tactics", "platforms", "mitigations", "detection", "used_by")
QUESTION_TYPES = CVE_QUESTIONS + TECHNIQUE_QUESTIONS

# Official names from MITRE's CWE list (cwe.mitre.org, version 4.x): the 2024 CWE Top 25 and a few more common in
# NVD. A CWE id not listed here is answered with the id alone: a name is never made up.
CWE_NAMES = {
    "CWE-20": "Improper Input Validation",
    "CWE-22": "Improper Limitation of a Pathname to a Restricted Directory ('Path Traversal')",
    "CWE-77": "Improper Neutralization of Special Elements used in a Command ('Command Injection')",
    "CWE-78": "Improper Neutralization of Special Elements used in an OS Command ('OS Command Injection')",
    "CWE-79": "Improper Neutralization of Input During Web Page Generation ('Cross-site Scripting')",
    "CWE-89": "Improper Neutralization of Special Elements used in an SQL Command ('SQL Injection')",
    "CWE-94": "Improper Control of Generation of Code ('Code Injection')",
    "CWE-119": "Improper Restriction of Operations within the Bounds of a Memory Buffer",
    "CWE-121": "Stack-based Buffer Overflow",
    "CWE-122": "Heap-based Buffer Overflow",
    "CWE-125": "Out-of-bounds Read",
    "CWE-190": "Integer Overflow or Wraparound",
    "CWE-200": "Exposure of Sensitive Information to an Unauthorized Actor",
    "CWE-269": "Improper Privilege Management",
    "CWE-276": "Incorrect Default Permissions",
    "CWE-287": "Improper Authentication",
    "CWE-295": "Improper Certificate Validation",
    "CWE-306": "Missing Authentication for Critical Function",
    "CWE-327": "Use of a Broken or Risky Cryptographic Algorithm",
    "CWE-352": "Cross-Site Request Forgery (CSRF)",
    "CWE-362": "Concurrent Execution using Shared Resource with Improper Synchronization ('Race Condition')",
    "CWE-400": "Uncontrolled Resource Consumption",
    "CWE-416": "Use After Free",
    "CWE-434": "Unrestricted Upload of File with Dangerous Type",
    "CWE-476": "NULL Pointer Dereference",
    "CWE-502": "Deserialization of Untrusted Data",
    "CWE-601": "URL Redirection to Untrusted Site ('Open Redirect')",
    "CWE-611": "Improper Restriction of XML External Entity Reference",
    "CWE-732": "Incorrect Permission Assignment for Critical Resource",
    "CWE-770": "Allocation of Resources Without Limits or Throttling",
    "CWE-787": "Out-of-bounds Write",
    "CWE-798": "Use of Hard-coded Credentials",
    "CWE-862": "Missing Authorization",
    "CWE-863": "Incorrect Authorization",
    "CWE-917": "Improper Neutralization of Special Elements used in an Expression Language Statement "
               "('Expression Language Injection')",
    "CWE-918": "Server-Side Request Forgery (SSRF)",
}

# The base metrics of each CVSS version, abbreviation → (metric name, value letter → value name), as the FIRST
# specifications define them (CVSS v2 guide section 2.1, v3.1 specification section 2, v4.0 specification section 2).
_IMPACT3 = {"H": "High", "L": "Low", "N": "None"}
_CVSS3 = {"AV": ("Attack Vector", {"N": "Network", "A": "Adjacent", "L": "Local", "P": "Physical"}),
          "AC": ("Attack Complexity", {"L": "Low", "H": "High"}),
          "PR": ("Privileges Required", {"N": "None", "L": "Low", "H": "High"}),
          "UI": ("User Interaction", {"N": "None", "R": "Required"}),
          "S": ("Scope", {"U": "Unchanged", "C": "Changed"}),
          "C": ("Confidentiality", _IMPACT3), "I": ("Integrity", _IMPACT3), "A": ("Availability", _IMPACT3)}
_CVSS4 = {"AV": _CVSS3["AV"], "AC": _CVSS3["AC"], "AT": ("Attack Requirements", {"N": "None", "P": "Present"}),
          "PR": _CVSS3["PR"], "UI": ("User Interaction", {"N": "None", "P": "Passive", "A": "Active"}),
          "VC": ("Vulnerable System Confidentiality", _IMPACT3), "VI": ("Vulnerable System Integrity", _IMPACT3),
          "VA": ("Vulnerable System Availability", _IMPACT3), "SC": ("Subsequent System Confidentiality", _IMPACT3),
          "SI": ("Subsequent System Integrity", _IMPACT3), "SA": ("Subsequent System Availability", _IMPACT3)}
_IMPACT2 = {"N": "None", "P": "Partial", "C": "Complete"}
_CVSS2 = {"AV": ("Access Vector", {"L": "Local", "A": "Adjacent Network", "N": "Network"}),
          "AC": ("Access Complexity", {"H": "High", "M": "Medium", "L": "Low"}),
          "Au": ("Authentication", {"M": "Multiple", "S": "Single", "N": "None"}),
          "C": ("Confidentiality Impact", _IMPACT2), "I": ("Integrity Impact", _IMPACT2),
          "A": ("Availability Impact", _IMPACT2)}

# A few phrasings per question type ({name} is filled from the record); one is chosen by a hash of the record id.
PHRASINGS = {
    "cwe": ("Here is a vulnerability description:\n\n{description}\n\nWhich weakness (CWE) does it describe?",
            "{cve}: {description}\n\nWhat is the CWE of this vulnerability?",
            "Classify this vulnerability by its weakness (CWE id and name):\n\n{description}"),
    "severity": ("{cve}: {description}\n\nHow severe is this vulnerability, and why?",
                 "How severe is {cve} and why? Its description: {description}",
                 "Rate the severity of this vulnerability and explain the rating:\n\n{cve}: {description}"),
    "affected": ("{cve}: {description}\n\nWhich products and versions does it affect?",
                 "Which products and versions are affected by {cve}? Its description: {description}"),
    "tactics": ("Which ATT&CK tactic(s) does technique {technique} belong to?",
                "Under which MITRE ATT&CK tactic(s) is {technique} listed?"),
    "platforms": ("On which platforms does ATT&CK technique {technique} apply?",
                  "Which platforms does {technique} target?"),
    "mitigations": ("What mitigations apply to technique {technique}?",
                    "How can {technique} be mitigated? Name the ATT&CK mitigations."),
    "detection": ("How would you detect {technique} in logs?",
                  "What should a defender monitor to detect ATT&CK technique {technique}?"),
    "used_by": ("Which groups and software are known to use {technique}?",
                "Who uses ATT&CK technique {technique}? Name the groups and software."),
}


@dataclass(frozen=True)
class QA:
    question: str  # the type, one of QUESTION_TYPES
    prompt: str
    answer: str


def record_kind(row: dict[str, Any]) -> str:
    """'cve', 'technique', 'attack_other' (an ATT&CK group, software or mitigation) or 'other' (logs, web, text)."""
    if row.get("format") in CVE_FORMATS:
        return "cve"
    if row.get("format") == "stix":
        return "technique" if _fields(row).get("type") == "attack-pattern" else "attack_other"
    return "other"


def record_key(row: dict[str, Any]) -> str:
    """What the split goes by: the CVE id (NVD and CVE 5 copies of one CVE share it), else the record id."""
    return row.get("cve_id") or row.get("record_id") or row["id"]


def questions_for(row: dict[str, Any], wanted: tuple[str, ...], seed: int) -> tuple[list[QA], list[str]]:
    """(the questions a CVE or technique row answers, the reasons others were not asked: 'no_cwe', ...)."""
    kind = record_kind(row)
    if kind not in ("cve", "technique"):
        return [], []
    f = _fields(row)
    builders = _cve_answers(row, f) if kind == "cve" else _technique_answers(row, f)
    context = _context(row, f, kind)
    out, missing = [], []
    for qtype, answer in builders.items():
        if qtype not in wanted:
            continue
        if not answer:
            missing.append(f"no_{qtype}")
            continue
        out.append(QA(qtype, _phrase(qtype, record_key(row), seed).format(**context), answer))
    return out, missing


def _fields(row: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(row.get("fields") or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _phrase(qtype: str, key: str, seed: int) -> str:
    options = PHRASINGS[qtype]
    digest = hashlib.sha256(f"megalang-sft-from:{seed}:{qtype}:{key}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def _context(row: dict[str, Any], f: dict[str, Any], kind: str) -> dict[str, str]:
    if kind == "cve":
        return {"cve": row.get("cve_id") or "", "description": f.get("description") or ""}
    attack_id, name = row.get("attack_id"), f.get("name") or ""
    return {"technique": f"{attack_id} ({name})" if attack_id and name else attack_id or name}


# --- answers: each "" when its field is missing (the question is then not asked) ------------------------------


def _cve_answers(row: dict[str, Any], f: dict[str, Any]) -> dict[str, str]:
    # A CWE question needs the description to ask about, the others read fine with only the id but are asked
    # with it too, so a model learns to tie the answer to what it is shown.
    has_text = bool(f.get("description"))
    return {"cwe": cwe_answer(row.get("cwe_ids") or []) if has_text else "",
            "severity": severity_answer(row.get("cvss_score"), row.get("cvss_vector"), f.get("severity"),
                                        f.get("cvss_version")) if has_text else "",
            "affected": affected_answer(f.get("affected_versions")) if has_text else ""}


def cwe_answer(cwe_ids: list[str]) -> str:
    """'CWE-502 (Deserialization of Untrusted Data); CWE-1234' — a name only where CWE_NAMES has it."""
    return "; ".join(f"{c} ({CWE_NAMES[c]})" if c in CWE_NAMES else c for c in cwe_ids)


def severity_answer(score: float | None, vector: str | None, severity: str | None, version: str | None) -> str:
    """'CRITICAL: CVSS 3.1 base score 10.0 (vector). Why: Attack Vector: Network, ...' from the record's CVSS."""
    if score is None:
        return ""
    head = f"CVSS {version} base score {score:.1f}" if version else f"CVSS base score {score:.1f}"
    head = f"{severity}: {head}" if severity else head
    if not vector:
        return head + "."
    why = explain_vector(vector, version)
    return f"{head} ({vector})." + (f" Why: {why}." if why else "")


def explain_vector(vector: str, version: str | None) -> str:
    """The base metrics of a CVSS vector in the specification's words; metrics a table lacks are left out."""
    parts = vector.split("/")
    if parts[0].startswith("CVSS:"):
        version, parts = parts[0][5:], parts[1:]
    table = _CVSS4 if (version or "").startswith("4") else _CVSS3 if (version or "").startswith("3") else _CVSS2
    words = []
    for part in parts:
        metric, _, value = part.partition(":")
        if metric in table and value in table[metric][1]:
            words.append(f"{table[metric][0]}: {table[metric][1][value]}")
    return ", ".join(words)


def affected_answer(affected: Any) -> str:
    """'apache log4j (>= 2.0.1, < 2.3.1 or 2.0 beta9); ...' from the record's products and version ranges."""
    if not isinstance(affected, dict):
        return ""
    return "; ".join(f"{product} ({' or '.join(ranges)})" if ranges else product
                     for product, ranges in affected.items())


def _technique_answers(row: dict[str, Any], f: dict[str, Any]) -> dict[str, str]:
    return {"tactics": ", ".join(row.get("tactics") or []),
            "platforms": ", ".join(row.get("platforms") or []),
            "mitigations": "\n".join(_entry_line(e) for e in f.get("mitigations") or []),
            "detection": f.get("detection") or "",
            "used_by": "; ".join(_user(e) for e in f.get("used_by") or [])}


def _entry_line(e: dict[str, Any]) -> str:
    """'- M1038 Execution Prevention: Use application control where appropriate.' (the relationship's own text)."""
    head = f"{e['id']} {e['name']}" if e.get("id") else e.get("name", "")
    return f"- {head}: {e['description']}" if e.get("description") else f"- {head}"


def _user(e: dict[str, Any]) -> str:
    kind = DOCUMENT_TYPES.get(e.get("type", ""), e.get("type", ""))
    label = ", ".join(x for x in (e.get("id"), kind) if x)
    return f"{e.get('name', '')} ({label})" if label else e.get("name", "")
