"""Vulnerability feeds and threat-intelligence bundles as Records (data/records.py): NVD CVE JSON 2.0 feeds and API
pages, CVE JSON 5 records and STIX 2.x bundles such as MITRE ATT&CK, one readable English document per CVE or
per ATT&CK technique, software, group or mitigation.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from megalang.data import readers
from megalang.data.records import Record
from megalang.errors import UserError

FEED_KINDS = ("nvd", "cve5", "stix")
# A feed is one JSON document and is loaded whole: NVD's yearly 2.0 feeds are ~100-200 MB, ATT&CK's enterprise bundle
# ~50 MB, and the parsed objects take several times the file's size in memory.
DEFAULT_MAX_BYTES = 512 << 20
# `counts` keys read_feed increments (a Counter the caller passes in and reads afterwards):
COUNT_KEYS = {
    "records_nvd": "documents yielded from NVD feeds (likewise records_cve5, records_stix)",
    "skipped_rejected": "rejected CVEs: NVD vulnStatus Rejected or a '** REJECT **' description, CVE 5 state REJECTED",
    "skipped_revoked": "STIX objects other than relationships with revoked: true",
    "skipped_deprecated": "STIX objects other than relationships with x_mitre_deprecated: true (and not revoked)",
    "skipped_bad_record": "bad records (or STIX objects) reported to on_error and skipped",
    "dropped_relationships": "STIX relationships revoked/deprecated or pointing to a skipped or missing object",
}
REFERENCE_CAP = 10  # reference URLs in a CVE's text (fields keep them all)
AFFECTED_CAP = 20  # products in a CVE's "Affected" line, and version ranges per product
LIST_CAP = 50  # entries per relationship list in an ATT&CK object's text (fields keep them all)

# --- sniffing: key patterns, not a parse: the head is the first bytes of a big file, usually cut mid-value. A key
# inside a JSON string is escaped (\"cveMetadata\") and does not match.
_CVE5 = re.compile(rb'"dataType"\s*:\s*"CVE_RECORD"|"cveMetadata"\s*:\s*\{')
_NVD = re.compile(rb'"format"\s*:\s*"NVD_CVE"|"vulnerabilities"\s*:\s*\[\s*(\{\s*"cve"\s*:|\])|"CVE_Items"\s*:\s*\[')
_STIX_BUNDLE = re.compile(rb'"type"\s*:\s*"bundle"')
_STIX_OBJECTS = re.compile(rb'"objects"\s*:\s*\[|"id"\s*:\s*"bundle--')
_STIX_OBJECTS_FIRST = re.compile(rb'\{\s*"objects"\s*:\s*\[\s*\{')  # a bundle whose "type" comes after its objects
_STIX_ID = re.compile(rb'"id"\s*:\s*"[a-z][a-z0-9-]*--[0-9a-f]{8}-[0-9a-f]{4}-')


def sniff_feed(head: bytes) -> str | None:
    """'nvd', 'cve5', 'stix' or None, from the first bytes (~64 KiB) of a decompressed JSON file, by content only.

    'nvd' also answers for a retired NVD 1.1 feed (CVE_Items), so that read_feed can say what to download instead.
    """
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith((b"{", b"[")):
        return None
    if _CVE5.search(head):
        return "cve5"
    if head.startswith(b"["):
        return None  # arrays: only of CVE 5 records
    if _NVD.search(head):
        return "nvd"
    if (_STIX_BUNDLE.search(head) and _STIX_OBJECTS.search(head)) or (
            _STIX_OBJECTS_FIRST.match(head) and _STIX_ID.search(head)):
        return "stix"
    return None


def read_feed(path: str | os.PathLike, kind: str, on_error: readers.OnError | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES, counts: Counter | None = None) -> Iterator[Record]:
    """Yield one Record per CVE (kind 'nvd', 'cve5') or ATT&CK object (kind 'stix') in one feed file.

    A feed is one JSON document, so the file (plain or .gz/.zst/.bz2) is loaded whole with `json`, at most
    `max_bytes` decompressed: NVD's yearly 2.0 feeds are ~100-200 MB, and memory peaks at several times that. A bad
    file always raises UserError; with `on_error` set, a bad record is reported to it and skipped. `counts` gets the
    COUNT_KEYS.
    """
    if kind not in FEED_KINDS:
        raise ValueError(f"unknown feed kind {kind!r}; expected one of {FEED_KINDS}")
    path = path if isinstance(path, str) and readers.is_url(path) else Path(path)
    counts = Counter() if counts is None else counts
    doc = load_feed(path, max_bytes)
    read = {"nvd": _read_nvd, "cve5": _read_cve5, "stix": _read_stix}[kind]
    for record in read(doc, path, on_error, counts):
        counts[f"records_{kind}"] += 1
        yield record


def load_feed(path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """The file's one JSON document, or a UserError that names the file and says what to do."""
    try:
        with readers.open_stream(path) as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path") from None
    except (*readers.corrupt_compression_errors(), OSError) as e:
        if (error := readers.corrupt_file_error(path, e)) is None:
            raise
        raise error from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: larger than max_bytes ({max_bytes}); a feed is loaded whole: raise max_bytes "
                        "or split the feed")
    text = readers.decode_utf8(data, str(path)).removeprefix("\ufeff")
    del data
    if not text.strip():
        raise UserError(f"{path}: empty file; expected an NVD, CVE JSON 5 or STIX JSON document: remove it or "
                        "re-download it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"at line {e.lineno} column {e.colno}"
        if e.msg == "Extra data":
            why = f"a second JSON document starts {at} (JSON Lines?); a feed is one JSON document: use it as published"
        elif e.msg.startswith("Unterminated string") or e.pos >= len(text.rstrip()):
            why = f"the JSON ends {at} before the document is complete (truncated download?); re-download the feed"
        else:
            why = f"malformed JSON ({e.msg}) {at}; re-download the feed or fix the file"
        raise UserError(f"{path}: {why}") from None


def _bad(where: str, what: str) -> UserError:
    return UserError(f"{where}: {what}; fix or remove the record")


def _each(items: list, where: Callable[[int], str], build: Callable[[Any, str], Any],
          on_error: readers.OnError | None, counts: Counter) -> Iterator[Any]:
    """build(item, where) for each item; a str it returns is the counts key of an item skipped on purpose."""
    for i, item in enumerate(items):
        try:
            out = build(item, where(i))
        except UserError as e:
            if on_error is None:
                raise
            counts["skipped_bad_record"] += 1
            on_error(e)
            continue
        if isinstance(out, str):
            counts[out] += 1
        else:
            yield out


def _get(obj, key: str, kind: type = str):
    """obj[key] if obj is an object and the value has the expected type, else an empty value: optional fields of odd
    shape are left out rather than losing the record (strings come stripped)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return (value.strip() if kind is str else value) if isinstance(value, kind) else kind()


def _strings(obj, *keys: str) -> list[str]:
    """The distinct strings in the lists obj[key], in order."""
    return _dedup(v.strip() for key in keys for v in _get(obj, key, list) if isinstance(v, str))


def _dedup(items) -> list:
    return list(dict.fromkeys(x for x in items if x))


# --- vulnerabilities: NVD 2.0 and CVE JSON 5 -------------------------------------------------------------
_Cvss = namedtuple("_Cvss", "version score vector severity")
# What an NVD entry and a CVE 5 record have in common; affected is "vendor product" → version ranges.
_Vuln = namedtuple("_Vuln", "cve_id published status description cvss cwe_ids affected references title",
                   defaults=("",))
_CWE = re.compile(r"CWE-\d+")  # NVD-CWE-Other and NVD-CWE-noinfo do not fullmatch
_CPE_SPLIT = re.compile(r"(?<!\\):")
_NVD_CVSS = (("cvssMetricV40", "4.0"), ("cvssMetricV31", "3.1"), ("cvssMetricV30", "3.0"), ("cvssMetricV2", "2.0"))
_CVE5_CVSS = (("cvssV4_0", "4.0"), ("cvssV3_1", "3.1"), ("cvssV3_0", "3.0"), ("cvssV2_0", "2.0"))
_CPE_BOUNDS = (("versionStartIncluding", ">="), ("versionStartExcluding", ">"), ("versionEndIncluding", "<="),
               ("versionEndExcluding", "<"))
_NO_VERSION = frozenset({"", "*", "-", "0", "n/a", "unspecified", "unknown"})


def _read_nvd(doc, path, on_error, counts) -> Iterator[Record]:
    if isinstance(doc, dict) and "CVE_Items" in doc:
        raise UserError(f"{path}: an NVD 1.1 feed (CVE_Items), which NVD retired; download the CVE JSON 2.0 feed "
                        "(nvdcve-2.0-*.json.gz) or use the CVE API 2.0")
    if not isinstance(doc, dict) or "vulnerabilities" not in doc:
        raise UserError(f"{path}: not an NVD CVE JSON 2.0 feed (no top-level 'vulnerabilities'); check the file and "
                        "feed kind")
    vulns = doc["vulnerabilities"]
    if not isinstance(vulns, list):
        raise UserError(f"{path}: 'vulnerabilities' is {type(vulns).__name__}, expected a list; re-download the feed")
    yield from _each(vulns, lambda i: f"{path}: vulnerabilities[{i}]", _nvd_record, on_error, counts)


def _nvd_record(item, where: str) -> Record | str:
    cve = _get(item, "cve", dict)
    if not cve:
        raise _bad(where, "no 'cve' object")
    if not (cve_id := _get(cve, "id")):
        raise _bad(where, "the 'cve' object has no 'id'")
    description, status = _english(_get(cve, "descriptions", list)), _get(cve, "vulnStatus")
    if status == "Rejected" or description.startswith("** REJECT **"):
        return "skipped_rejected"
    weaknesses = [d for w in _get(cve, "weaknesses", list) for d in _get(w, "description", list)]
    return _vuln_record("nvd", _Vuln(
        cve_id=cve_id, published=_get(cve, "published"), status=status, description=description,
        cvss=_nvd_cvss(_get(cve, "metrics", dict)), cwe_ids=_dedup(_cwe(_get(d, "value")) for d in weaknesses),
        affected=_nvd_affected(_get(cve, "configurations", list)),
        references=_dedup(_get(r, "url") for r in _get(cve, "references", list))))


def _nvd_cvss(metrics: dict) -> _Cvss | None:
    """The newest CVSS version present, the 'Primary' (NVD's own) score where there are several."""
    # CVSS 2.0 keeps baseSeverity beside cvssData, the later versions inside it.
    return _first_cvss((version, _get(m, "cvssData", dict), _get(m, "baseSeverity")) for key, version in _NVD_CVSS
                       for m in sorted(_get(metrics, key, list), key=lambda m: _get(m, "type") != "Primary"))


def _first_cvss(candidates) -> _Cvss | None:
    """The first (version, CVSS data, severity beside the data) whose data has a numeric base score."""
    for version, data, severity in candidates:
        score = data.get("baseScore")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return _Cvss(_get(data, "version") or version, float(score), _get(data, "vectorString"),
                         (_get(data, "baseSeverity") or severity).upper())
    return None


def _nvd_affected(configurations: list) -> dict[str, list[str]]:
    """'vendor product' → version ranges, from the vulnerable CPE matches (not the platforms they run on)."""
    out: dict[str, list[str]] = {}
    nodes = [node for config in configurations for node in _get(config, "nodes", list)]
    for match in (m for node in nodes for m in _get(node, "cpeMatch", list)):
        parts = _CPE_SPLIT.split(_get(match, "criteria"))
        if len(parts) < 6 or parts[0] != "cpe" or match.get("vulnerable") is False:  # no criteria: not an object
            continue
        vendor, product, version = (p.replace("\\", "").replace("_", " ") for p in parts[3:6])
        bounds = [version if version not in _NO_VERSION else ""]
        bounds += [f"{op} {value}" for key, op in _CPE_BOUNDS if (value := _get(match, key))]
        out.setdefault(f"{vendor} {product}", []).append(", ".join(b for b in bounds if b))
    return {product: _dedup(ranges) for product, ranges in out.items()}


def _read_cve5(doc, path, on_error, counts) -> Iterator[Record]:
    if isinstance(doc, list):
        yield from _each(doc, lambda i: f"{path}: [{i}]", _cve5_record, on_error, counts)
    elif isinstance(doc, dict) and ("cveMetadata" in doc or doc.get("dataType") == "CVE_RECORD"):
        yield from _each([doc], lambda i: str(path), _cve5_record, on_error, counts)
    else:
        raise UserError(f"{path}: not a CVE JSON 5 record or array of records (no 'cveMetadata'); check the file and "
                        "feed kind")


def _cve5_record(rec, where: str) -> Record | str:
    if not isinstance(rec, dict):
        raise _bad(where, f"is a {type(rec).__name__}, expected a CVE JSON 5 record")
    cve_meta, containers = _get(rec, "cveMetadata", dict), _get(rec, "containers", dict)
    if not (cve_id := _get(cve_meta, "cveId")):
        raise _bad(where, "no 'cveMetadata.cveId'")
    if (state := _get(cve_meta, "state").upper()) == "REJECTED":
        return "skipped_rejected"
    if not (cna := _get(containers, "cna", dict)):
        raise _bad(f"{where} ({cve_id})", "no 'containers.cna' object")
    # An ADP (CISA's Vulnrichment) adds CVSS and CWE to records whose CNA gave none; the CNA's own come first.
    providers = [cna, *_get(containers, "adp", list)]
    cvss = next(filter(None, (_cve5_cvss(_get(c, "metrics", list)) for c in providers)), None)
    cwe_ids = next(filter(None, (_cve5_cwes(_get(c, "problemTypes", list)) for c in providers)), [])
    return _vuln_record("cve5", _Vuln(
        cve_id=cve_id, published=_get(cve_meta, "datePublished"), status=state,
        description=_english(_get(cna, "descriptions", list)), cvss=cvss, cwe_ids=cwe_ids,
        affected=_cve5_affected(_get(cna, "affected", list)),
        references=_dedup(_get(r, "url") for r in _get(cna, "references", list)), title=_get(cna, "title")))


def _cve5_cvss(metrics: list) -> _Cvss | None:
    return _first_cvss((version, _get(m, key, dict), "") for key, version in _CVE5_CVSS for m in metrics)


def _cve5_cwes(problem_types: list) -> list[str]:
    descriptions = [d for p in problem_types for d in _get(p, "descriptions", list)]
    # Some CNAs write the CWE only in the text ("CWE-79 Improper Neutralization ..."), without a cweId.
    return _dedup(_cwe(_get(d, "cweId") or (_get(d, "description").split(" ")[0] if _get(d, "type") == "CWE" else ""))
                  for d in descriptions)


def _cve5_affected(affected: list) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in affected:
        names = [n for n in (_get(a, "vendor"), _get(a, "product")) if n.lower() not in _NO_VERSION]
        if not (product := " ".join(names) or _get(a, "packageName")):
            continue
        ranges = out.setdefault(product, [])
        for v in _get(a, "versions", list):
            start, below, upto = _get(v, "version"), _get(v, "lessThan"), _get(v, "lessThanOrEqual")
            start = "" if start.lower() in _NO_VERSION or start in (below, upto) else start
            end = f"< {below}" if below else f"<= {upto}" if upto else ""
            if _get(v, "status") in ("affected", ""):
                ranges.append(", ".join(x for x in (f">= {start}" if start and end else start, end) if x))
    return {product: _dedup(ranges) for product, ranges in out.items()}


def _cwe(value: str) -> str:
    return value if _CWE.fullmatch(value) else ""


def _english(descriptions: list) -> str:
    """The English description (lang 'en', 'en-US', ...), else the first one."""
    values = [(_get(d, "lang").lower(), _get(d, "value")) for d in descriptions if _get(d, "value")]
    return next((v for lang, v in values if lang.startswith("en")), values[0][1] if values else "")


def _vuln_record(fmt: str, v: _Vuln) -> Record:
    c = v.cvss
    lines = [f"{v.cve_id}: {v.title}" if v.title else v.cve_id]
    if v.published:
        lines.append(f"Published: {v.published[:10]}")
    if c:
        detail = ", ".join(x for x in (f"CVSS {c.version} base score {c.score:.1f}", c.vector) if x)
        lines.append(f"Severity: {c.severity} ({detail})" if c.severity else f"Severity: {detail}")
    if v.cwe_ids:
        lines.append("Weakness: " + ", ".join(v.cwe_ids))
    if v.affected:
        shown = [f"{p} ({' or '.join(_capped(r, AFFECTED_CAP, ''))})" if r else p for p, r in v.affected.items()]
        lines.append("Affected: " + "; ".join(_capped(shown, AFFECTED_CAP, "")))
    if v.description:
        lines += ["", v.description]
    if v.references:
        lines += ["", "References:", *_capped([f"- {u}" for u in v.references], REFERENCE_CAP)]
    fields = {"description": v.description, "title": v.title or None, "severity": (c.severity or None) if c else None,
              "cvss_version": c.version if c else None, "references": v.references, "affected": list(v.affected),
              "affected_versions": v.affected, "vuln_status": v.status or None}
    return Record("\n".join(lines), {
        "format": fmt, "record_id": v.cve_id, "cve_id": v.cve_id, "cwe_ids": v.cwe_ids,
        "cvss_score": c.score if c else None, "cvss_vector": (c.vector or None) if c else None,
        "published": v.published or None, "fields": json.dumps(fields, ensure_ascii=False)})


def _capped(items: list[str], cap: int, bullet: str = "- ") -> list[str]:
    """The first `cap` items, then one saying how many were left out."""
    return items[:cap] + [f"{bullet}and {len(items) - cap} more (list capped at {cap})"] * (len(items) > cap)


# --- STIX 2.x bundles (MITRE ATT&CK) ---------------------------------------------------------------------
# The object types that become documents, and what the text calls them.
DOCUMENT_TYPES = {"attack-pattern": "technique", "malware": "software", "tool": "software", "intrusion-set": "group",
                  "course-of-action": "mitigation"}
_SPEC_VERSIONS = ("2.0", "2.1")
_ATTACK_SOURCES = frozenset({"mitre-attack", "mitre-mobile-attack", "mitre-ics-attack"})  # ids and kill chains
# relationship type → (role on the source, role on the target)
_ROLES = {"mitigates": ("mitigates", "mitigations"), "uses": ("uses", "used_by"),
          "subtechnique-of": ("subtechnique_of", "subtechniques")}
_SECTIONS = (("mitigations", "Mitigations"), ("subtechniques", "Sub-techniques"), ("used_by", "Used by"),
             ("uses", "Uses"), ("mitigates", "Mitigates"))
_CITATION = re.compile(r"\s*\(Citation: [^)]*\)")
_MD_LINK = re.compile(r"\[([^\]]+)\]\((?:https?://|/)[^)\s]*\)")


def _read_stix(doc, path, on_error, counts) -> Iterator[Record]:
    if not isinstance(doc, dict) or doc.get("type") != "bundle":
        raise UserError(f"{path}: not a STIX bundle (top-level 'type' is not 'bundle'); check the file and feed kind")
    objects = doc.get("objects")
    if not isinstance(objects, list):
        raise UserError(f"{path}: the bundle's 'objects' is {type(objects).__name__}, expected a list; check the file")
    # Another STIX version means another format, not a bad record: the whole file is refused (STIX 2.0 puts
    # spec_version on the bundle, 2.1 on each object).
    for i, obj in enumerate([doc, *objects]):
        if isinstance(obj, dict) and obj.get("spec_version", "2.1") not in _SPEC_VERSIONS:
            where = f"objects[{i - 1}] ({_get(obj, 'id')})" if i else "bundle"
            raise UserError(f"{path}: {where}: STIX spec_version {obj['spec_version']!r}; megalang reads STIX 2.0 "
                            "and 2.1: use a 2.x export of the bundle")
    live = list(_each(objects, lambda i: f"{path}: objects[{i}]", _live_stix, on_error, counts))
    index = {obj["id"]: obj for obj in live if obj["type"] != "relationship"}
    links = _link(index, [obj for obj in live if obj["type"] == "relationship"], counts)
    for obj in index.values():
        if obj["type"] in DOCUMENT_TYPES:
            yield _stix_record(obj, links.get(obj["id"], {}), index)


def _live_stix(obj, where: str) -> dict | str:
    """The object, or the counts key it is left out under (revoked or deprecated)."""
    if not isinstance(obj, dict):
        raise _bad(where, f"is a {type(obj).__name__}, expected a STIX object")
    if missing := [k for k in ("type", "id") if not _get(obj, k)]:
        raise _bad(where, "missing " + " and ".join(map(repr, missing)))
    rel = obj["type"] == "relationship"
    if rel and (missing := [k for k in ("relationship_type", "source_ref", "target_ref") if not _get(obj, k)]):
        raise _bad(f"{where} ({obj['id']})", "relationship missing " + ", ".join(map(repr, missing)))
    dead = "revoked" if obj.get("revoked") is True else "deprecated" if obj.get("x_mitre_deprecated") is True else ""
    return ("dropped_relationships" if rel else f"skipped_{dead}") if dead else obj


def _link(index: dict[str, dict], relationships: list[dict], counts: Counter) -> dict[str, dict[str, list]]:
    """id → role → [(other id, relationship description)], for the relationship types in _ROLES."""
    links: dict[str, dict[str, list]] = {}
    for rel in relationships:
        source, target = rel["source_ref"], rel["target_ref"]
        if source not in index or target not in index:
            counts["dropped_relationships"] += 1
            continue
        if rel["relationship_type"] in _ROLES:
            on_source, on_target = _ROLES[rel["relationship_type"]]
            description = _clean(_get(rel, "description"))
            links.setdefault(source, {}).setdefault(on_source, []).append((target, description))
            links.setdefault(target, {}).setdefault(on_target, []).append((source, description))
    return links


def _stix_record(obj: dict, links: dict[str, list], index: dict[str, dict]) -> Record:
    attack_id = _attack_id(obj)
    name = _get(obj, "name") or attack_id or obj["id"]
    tactics = _dedup(_get(p, "phase_name") for p in _get(obj, "kill_chain_phases", list)
                     if _get(p, "kill_chain_name") in _ATTACK_SOURCES)
    platforms = _strings(obj, "x_mitre_platforms")
    aliases = [a for a in _strings(obj, "aliases", "x_mitre_aliases") if a != name]
    description, detection = _clean(_get(obj, "description")), _clean(_get(obj, "x_mitre_detection"))
    related = {role: sorted((_entry(other, text, index) for other, text in links.get(role, [])),
                            key=lambda e: (e["id"] or "~", e["name"])) for role, _ in _SECTIONS}
    parents = [_entry(other, "", index) for other, _ in links.get("subtechnique_of", [])]
    lines = [f"{attack_id}: {name}" if attack_id else name, f"Type: {DOCUMENT_TYPES[obj['type']]} (STIX {obj['type']})"]
    lines += [f"{label}: {', '.join(values)}" for label, values in
              (("Also known as", aliases), ("Tactics", tactics), ("Platforms", platforms),
               ("Sub-technique of", [f"{p['id']} {p['name']}".strip() for p in parents])) if values]
    if description:
        lines += ["", description]
    if detection:
        lines += ["", f"Detection: {detection}"]
    for role, title in _SECTIONS:
        if related[role]:
            entries = [_entry_line(e, with_type=role in ("used_by", "uses")) for e in related[role]]
            lines += ["", f"{title}:", *_capped(entries, LIST_CAP)]
    fields = {"name": name, "type": obj["type"], "attack_id": attack_id or None, "description": description,
              "aliases": aliases, "detection": detection or None, "subtechnique_of": parents, **related}
    return Record("\n".join(lines), {
        "format": "stix", "record_id": obj["id"], "attack_id": attack_id or None, "tactics": tactics,
        "platforms": platforms, "fields": json.dumps(fields, ensure_ascii=False)})


def _attack_id(obj: dict) -> str:
    refs = _get(obj, "external_references", list)
    return next((_get(r, "external_id") for r in refs if _get(r, "source_name") in _ATTACK_SOURCES), "")


def _entry(stix_id: str, description: str, index: dict[str, dict]) -> dict:
    other = index[stix_id]
    attack_id = _attack_id(other)
    return {"id": attack_id or None, "name": _get(other, "name") or attack_id or stix_id,
            "type": other["type"], "description": description}


def _entry_line(e: dict, with_type: bool) -> str:
    head = f"{e['id']} {e['name']}" if e["id"] else e["name"]
    kind = f" ({DOCUMENT_TYPES.get(e['type'], e['type'])})" if with_type else ""
    return f"- {head}{kind}: {e['description']}" if e["description"] else f"- {head}{kind}"


def _clean(text: str) -> str:
    """ATT&CK prose without its citation markers and with markdown links reduced to their words."""
    return _MD_LINK.sub(r"\1", _CITATION.sub("", text)).strip()
