"""Structured records: what the security and web readers (vulnerability feeds, STIX bundles, logs, WARC/WET) yield.

A record is one document's text plus its metadata. The metadata keys are fixed (`META_COLUMNS`), so every
prepared folder has the same Parquet schema whatever it was read from: a column a format does not fill is
null. `fields` holds the record's own structured values that the text was written from (a CVE's description
and references, a technique's mitigations and detection advice), as JSON, so later stages (`data sft-from`)
take answers from the record itself instead of parsing its text back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# name → Arrow type name: "string", "float64", "list<string>". All nullable.
META_COLUMNS: dict[str, str] = {
    "format": "string",  # nvd, cve5, stix, syslog, log, jsonlog, warc, wet
    "record_id": "string",  # CVE id, STIX id, WARC-Record-ID, or file:first-line for a log window
    "lang": "string",  # ISO 639-1 code from language identification (web text)
    "cve_id": "string",
    "cwe_ids": "list<string>",  # CWE-79, ...; NVD-CWE-Other / NVD-CWE-noinfo left out
    "cvss_score": "float64",  # base score of the newest CVSS version present (4.0 > 3.1 > 3.0 > 2.0)
    "cvss_vector": "string",
    "published": "string",  # ISO 8601 as the feed gives it
    "attack_id": "string",  # T1059, T1059.001, S0154, G0016, M1038 (MITRE ATT&CK external id)
    "tactics": "list<string>",  # kill-chain phase names: execution, persistence, ...
    "platforms": "list<string>",
    "host": "string",  # log host
    "program": "string",  # log program (syslog APP-NAME / TAG)
    "time": "string",  # first timestamp of a log window, ISO 8601
    "url": "string",  # WARC-Target-URI
    "fields": "string",  # JSON object: the record's own structured values (see module docstring)
}


@dataclass
class Record:
    """One document from a structured source: its text and metadata (keys from META_COLUMNS only)."""

    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.meta) - set(META_COLUMNS)
        if unknown:
            raise ValueError(f"unknown metadata key(s) {sorted(unknown)}; add them to META_COLUMNS")


def arrow_fields() -> list:
    """The metadata columns as pyarrow fields, in META_COLUMNS order (every one nullable)."""
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "list<string>": pa.list_(pa.string())}
    return [pa.field(name, types[kind]) for name, kind in META_COLUMNS.items()]


def empty_columns() -> dict[str, list]:
    return {name: [] for name in META_COLUMNS}


def append_meta(columns: dict[str, list], meta: dict[str, Any] | None) -> None:
    """One row of metadata (None: a document from a plain source, all null) onto the metadata lists in `columns`."""
    meta = meta or {}
    for name in META_COLUMNS:
        columns[name].append(meta.get(name))


def meta_of(row: dict[str, Any]) -> dict[str, Any]:
    """The non-null metadata of a row read back from Parquet."""
    return {name: row[name] for name in META_COLUMNS if row.get(name) is not None}
