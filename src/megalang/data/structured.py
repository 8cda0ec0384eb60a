"""Which reader `data prepare` gives a file, by what it holds: vulnerability feeds (NVD CVE 2.0, CVE JSON 5), STIX
bundles, logs (syslog, plain, JSON lines) and web archives (WARC, WET) are recognised from their first 64 KiB
(decompressed), whatever their name; everything else goes to the text/JSONL/JSON/Parquet/Arrow readers by name.

Feeds, STIX bundles and logs are the `security` source kind, web archives `web` (data/quality.py); each record
carries its metadata (data/records.py) into the prepared folder's columns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from megalang.config import PrepareConfig
from megalang.data import feeds, logs, web
from megalang.data.documents import Doc
from megalang.data.readers import OnError, file_format, open_stream, read_documents, source_of

SNIFF_BYTES = 64 << 10
# Plain-text names whose content is sniffed too (a syslog capture saved as .txt); code and markup are not.
_SNIFFED_TEXT = (".txt", ".text", ".txt.gz", ".txt.zst", ".txt.bz2")
_ARCHIVE_NAME = re.compile(r"\.(?:warc|wet)(?:\.gz|\.zst|\.bz2)?$")
KIND_OF_FAMILY = {"feed": "security", "log": "security", "web": "web"}


def read_head(path: Path | str, size: int = SNIFF_BYTES) -> bytes:
    with open_stream(path) as f:
        return f.read(size)


def sniff(path: Path | str) -> tuple[str, str] | None:
    """(family, format) — ("feed", "nvd"), ("log", "syslog"), ("web", "warc"), ... — or None for a file the
    by-name readers take. A file that cannot be read here (truncated gzip, missing) is left to the reader that
    will report it with its own message."""
    fmt = file_format(path)
    name = str(path).lower()
    if fmt not in ("structured", "json", "jsonl") and not (fmt == "text" and name.endswith(_SNIFFED_TEXT)):
        return None
    try:
        head = read_head(path)
    except Exception:
        head = b""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start == b"W" and (found := web.sniff_warc(head)):
        return ("web", found)
    if start in (b"{", b"[") and (found := feeds.sniff_feed(head)):
        return ("feed", found)
    if found := logs.sniff_log(head):
        return ("log", found)
    if fmt == "structured":  # named like an archive or a log but shaped like neither: that reader says why
        return ("web", "warc") if _ARCHIVE_NAME.search(name) else ("log", "log")
    return None


def read_docs(path: Path | str, cfg: PrepareConfig, on_error: OnError | None, counts: Counter) -> Iterator[Doc]:
    """Every document of one file, with the kind and metadata its reader knows. Bad input raises UserError
    naming the file (and record); with `on_error` set, a bad record is reported to it and skipped."""
    found = sniff(path)
    if found is None:
        for text, source in read_documents(path, cfg.text_field, cfg.max_doc_bytes, on_error):
            yield Doc(text, source)
        return
    family, fmt = found
    source, kind = source_of(path), KIND_OF_FAMILY[family]
    mine = Counter(files=1)  # this file's counts, added to `counts` as "FORMAT/KEY" however reading ends
    if family == "feed":
        records = feeds.read_feed(path, fmt, on_error=on_error, max_bytes=cfg.max_feed_bytes, counts=mine)
    elif family == "log":
        records = logs.read_log(path, fmt, window_s=cfg.log_window_s, max_doc_bytes=min(cfg.max_doc_bytes, 64 << 10),
                                message_field=cfg.log_message_field, time_field=cfg.log_time_field,
                                host_field=cfg.log_host_field, year=cfg.log_year, on_error=on_error, counts=mine)
    else:
        records = web.read_warc(path, fmt, languages=set(cfg.languages) or None, on_error=on_error, counts=mine)
    try:
        for record in records:
            yield Doc(record.text, source, kind=kind, meta=record.meta)
    finally:
        counts.update({f"{fmt}/{key}": n for key, n in mine.items()})


def nest_counts(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    """{"nvd/files": 1, "nvd/records_nvd": 2, ...} → {"nvd": {"files": 1, "records_nvd": 2}, ...}, sorted."""
    out: dict[str, dict[str, int]] = {}
    for key, n in sorted(counts.items()):
        fmt, _, name = key.partition("/")
        out.setdefault(fmt, {})[name] = n
    return out
