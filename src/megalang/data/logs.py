"""Log files as documents: sniffing syslog (RFC 3164 / 5424 / rsyslog's RFC 3339 file format), JSON-lines logs and
plain timestamped logs by content, and reading them as `Record`s of consecutive lines grouped by host and time window.

A document is one host's lines whose timestamps lie within `window_s` seconds of its first timestamped line, cut
earlier at `max_doc_lines` / `max_doc_bytes`; untimed lines (stack traces, continuations) stay with the line before.
Text: the lines as written (syslog without `<PRI>`); jsonlog records as `TIME HOST PROGRAM: MESSAGE` from the fields
present. meta: format, record_id (`file:first line`), host, program (the most common), time (first stamp, ISO 8601),
fields (JSON: lines, programs {name: count}, time_end, severity {name: count} when lines carry one).
RFC 3164 stamps have no year: `year` supplies it, else the file's modification year (one less for months after the
modification month), plus one at each December → January turn. Zone-less times count as UTC for windows only.

`counts` (a Counter) gets: bytes (decompressed bytes read), lines (lines put into documents), lines_untimed (of
those, lines with no timestamp), lines_blank (ignored), lines_skipped (bad lines handed to `on_error`), documents,
documents_cut (documents ended by max_doc_lines / max_doc_bytes, not by window or host), files_empty (a file with
no non-blank lines: no documents, not an error).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from megalang.data import readers
from megalang.data.records import Record
from megalang.errors import UserError

KINDS = ("syslog", "jsonlog", "log")
MESSAGE_FIELDS = ("message", "msg", "log", "MESSAGE")  # ECS/Logstash, bunyan/pino/zap, Docker json-file, journald
TIME_FIELDS = ("@timestamp", "timestamp", "time", "ts", "__REALTIME_TIMESTAMP")
HOST_FIELDS = ("host.name", "host.hostname", "hostname", "host", "_HOSTNAME")
PROGRAM_FIELDS = ("service.name", "process.name", "program", "app", "appname", "SYSLOG_IDENTIFIER", "container_name")
LEVEL_FIELDS = ("log.level", "level", "levelname", "severity", "PRIORITY")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")  # RFC 5424 codes 0-7
_BUNYAN_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_SNIFF_LINES = 500  # lines read from the head (blank ones included)

_MON = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_MONTHS = {m: i for i, m in enumerate(_MON.split("|"), 1)}
_RFC3164 = re.compile(rf"(?:<(\d{{1,3}})>)?({_MON}) ([ \d]?\d) (\d\d):(\d\d):(\d\d)(?:\.\d+)? (\S+)(?: (.*))?")
_RFC5424 = re.compile(r"<(\d{1,3})>\d{1,2} (\S+) (\S+) (\S+) \S+ \S+")
_ISO = r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(?: ?(Z|[+-]\d\d(?::?\d\d)?))?"
_ISO_STAMP = re.compile(_ISO + r"$")
# rsyslog writing RFC 3339 stamps to files (Debian 12's default): `2025-12-04T10:15:01.123+00:00 web01 sshd: …`
_RFC3339_SYSLOG = re.compile(
    r"(?:<(\d{1,3})>)?(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d) (\S+) (.*)")
_TAG = re.compile(r"([^\s\[\]:]+)(?:\[[^\]]*\])?:")
_LEVEL_WORDS = frozenset({"TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "ERR", "CRIT", "CRITICAL",
                          "FATAL", "SEVERE", "ALERT", "EMERG"})
# Plain logs: a stamp at the start of the line, followed by a space, `]`, `:`, `|` or the end — not `,` (CSV rows).
_END = r"(?=[\s\]:|]|$)"
_LOG_STAMPS = (  # (pattern, day-month-year with a month name?)
    (re.compile(r"\[?" + _ISO + _END), False),  # ISO 8601; log4j/logback/Python logging `2024-01-02 10:00:00,123`
    # nginx error log, Go's log package: 2024/01/02 10:00:00
    (re.compile(r"\[?(\d{4})/(\d\d)/(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?()" + _END), False),
    (re.compile(rf"\S+ \S+ \S+ \[(\d\d)/({_MON})/(\d{{4}}):(\d\d):(\d\d):(\d\d)() ([+-]\d{{4}})\]"), True),  # CLF
    (re.compile(rf"\[?(\d\d)-({_MON})-(\d{{4}}) (\d\d):(\d\d):(\d\d)(?:\.(\d{{1,9}}))?()" + _END), True),  # Tomcat
)
_LEVEL_AFTER = re.compile(r"[\s\[(|:-]*([A-Za-z]{3,8})\b")

Stamp = tuple  # (year, month, day, hour, minute, second, fraction digits, "" / "Z" / "±hh:mm"): rendered when needed
Parsed = tuple  # (text, seconds or None, stamp, host, program, severity)


class _BadLine(Exception):
    """A line a parser cannot use; the reader adds file:line."""


def sniff_log(head: bytes) -> str | None:
    """'syslog', 'jsonlog', 'log' or None, from the first bytes (~64 KiB) of a decompressed file; more than half of
    the non-blank, non-indented lines must have the shape. A cut last line is left out."""
    if b"\0" in head:
        return None
    lines = head.decode("utf-8", "replace").split("\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines.pop()
    lines = [t for line in lines[:_SNIFF_LINES] if (t := line.rstrip("\r").lstrip("\ufeff")).strip()]
    if _most(lines, _json_log_like):
        return "jsonlog"
    lines = [line for line in lines if not line[0].isspace()]  # continuations (stack frames) count for neither side
    if _most(lines, lambda line: _syslog_fields(line) is not None):
        return "syslog"
    if _most(lines, lambda line: _log_stamp(line, [0]) is not None):
        return "log"
    return None


def _most(lines: list[str], test: Callable[[str], object]) -> bool:
    return sum(1 for line in lines if test(line)) * 2 > len(lines) > 0


def _json_log_like(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        obj = json.loads(line)
    except ValueError:
        return False
    return isinstance(obj, dict) and _lookup(obj, _paths(MESSAGE_FIELDS)) is not None and _lookup(
        obj, _paths(TIME_FIELDS + LEVEL_FIELDS + HOST_FIELDS), (str, int, float)) is not None


def read_log(path: Path | str, kind: str, window_s: float = 300, max_doc_lines: int = 500,
             max_doc_bytes: int = 64 << 10, message_field: str | None = None, time_field: str | None = None,
             host_field: str | None = None, year: int | None = None, on_error: readers.OnError | None = None,
             counts: Counter | None = None) -> Iterator[Record]:
    """Documents of one log file (see the module docstring). `kind` is what `sniff_log` returns. The *_field
    arguments (jsonlog only; dotted paths such as `host.name` reach into nested objects) replace the guessed fields.
    A bad line (invalid UTF-8, NUL bytes, jsonlog lines that are not JSON objects with the message) raises a
    `UserError` naming file:line, or with `on_error` is reported, skipped and counted; a line over max_doc_bytes and
    a corrupt compressed file always raise."""
    if kind not in KINDS:
        raise UserError(f"{path}: unknown log kind {kind!r}; use one of {', '.join(KINDS)}")
    counts = counts if counts is not None else Counter()
    parse = (_syslog_parser(_reference_time(path, year)) if kind == "syslog" else _log_parser() if kind == "log"
             else _jsonlog_parser(message_field, time_field, host_field))
    builder = _Builder(readers.file_name(path), kind, window_s, max_doc_lines, max_doc_bytes, counts)
    lineno = blank = 0
    try:
        with readers.open_stream(path) as f:
            while raw := f.readline(max_doc_bytes + 1):
                lineno += 1
                counts["bytes"] += len(raw)
                if len(raw) > max_doc_bytes and not raw.endswith(b"\n"):
                    raise UserError(f"{path}:{lineno}: line longer than max_doc_bytes ({max_doc_bytes}) bytes; "
                                    "check that this is a log file, or raise max_doc_bytes")
                try:
                    line = _decode(raw, lineno)
                    if not line.strip():
                        blank += 1
                        continue
                    parsed = parse(line)
                except _BadLine as e:
                    error = UserError(f"{path}:{lineno}: {e}")
                    if on_error is None:
                        raise error from None
                    on_error(error)
                    counts["lines_skipped"] += 1
                    continue
                if done := builder.add(parsed, lineno, len(raw)):
                    yield done
    except (*readers.corrupt_compression_errors(), OSError) as e:
        if (error := readers.corrupt_file_error(path, e)) is None:
            raise
        raise error from None
    if builder.lines:
        yield builder.emit()
    if blank:
        counts["lines_blank"] += blank
    if blank == lineno:
        counts["files_empty"] += 1


def _decode(raw: bytes, lineno: int) -> str:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadLine(f"invalid UTF-8 (line byte {e.start}); convert the file to UTF-8 or exclude it") from None
    if "\0" in line:
        raise _BadLine("NUL bytes (binary data, or a log cut short by a crash); remove them or exclude the file")
    line = line.rstrip("\r\n")
    return line.lstrip("\ufeff") if lineno == 1 else line


class _Builder:
    """Collects lines into the current document; `add` returns the document a line ends, if any."""

    def __init__(self, file_name: str, kind: str, window_s: float, max_lines: int, max_bytes: int, counts: Counter):
        self.file_name, self.kind, self.window_s, self.counts = file_name, kind, window_s, counts
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.last_stamp: Stamp | None = None  # carried into a document that starts with untimed lines
        self._reset()

    def _reset(self) -> None:
        self.lines: list[str] = []
        self.nbytes = self.lineno = self.untimed = 0
        # start: seconds of the window's first timestamp; first, last: the document's first and last stamps
        self.start = self.host = self.first = self.last = None
        self.programs: Counter = Counter()
        self.severity: Counter = Counter()

    def add(self, parsed: Parsed, lineno: int, nbytes: int) -> Record | None:
        text, seconds, stamp, host, program, severity = parsed
        done = None
        if self.lines and seconds is not None and self.start is not None and (
                host != self.host or abs(seconds - self.start) >= self.window_s):
            done = self.emit()
        elif self.lines and (len(self.lines) >= self.max_lines or self.nbytes + nbytes > self.max_bytes):
            self.counts["documents_cut"] += 1
            window = self.start, self.host  # a cut divides the window; it does not move where the next one starts
            done = self.emit()
            self.start, self.host = window
        if not self.lines:
            self.lineno = lineno
        if seconds is not None:
            if self.start is None:
                self.start, self.host = seconds, host
            if self.first is None:
                self.first = stamp
            self.last = stamp
        else:
            self.untimed += 1
        self.lines.append(text)
        self.nbytes += nbytes
        if program:
            self.programs[program] += 1
        if severity:
            self.severity[severity] += 1
        return done

    def emit(self) -> Record:
        first = self.first or self.last_stamp
        last = self.last or first
        fields: dict = {"lines": len(self.lines), "programs": dict(self.programs), "time_end": _iso(last)}
        if self.severity:
            fields["severity"] = dict(self.severity)
        program = self.programs.most_common(1)[0][0] if self.programs else None
        meta = {"format": self.kind, "record_id": f"{self.file_name}:{self.lineno}", "host": self.host,
                "program": program, "time": _iso(first),
                "fields": json.dumps(fields, ensure_ascii=False, separators=(",", ":"))}
        record = Record("\n".join(self.lines), meta)
        self.counts["documents"] += 1
        self.counts["lines"] += len(self.lines)
        if self.untimed:
            self.counts["lines_untimed"] += self.untimed
        self.last_stamp = last
        self._reset()
        return record


# --- timestamps -------------------------------------------------------------------------------------


def _seconds(stamp: Stamp) -> float | None:
    """Seconds since the epoch, or None for an impossible date or time."""
    y, mo, d, h, mi, s, frac, zone = stamp
    day = _day_seconds(y, mo, d)
    if day is None or h > 23 or mi > 59 or s > 60:
        return None
    value = day + h * 3600 + mi * 60 + s + (float("0." + frac) if frac else 0.0)
    if len(zone) == 6:  # ±hh:mm
        value -= (-1 if zone[0] == "-" else 1) * (int(zone[1:3]) * 3600 + int(zone[4:]) * 60)
    return value


@functools.lru_cache(maxsize=4096)  # a log repeats the same few days
def _day_seconds(y: int, mo: int, d: int) -> int | None:
    try:
        return (dt.date(y, mo, d).toordinal() - 719163) * 86400  # 719163: 1970-01-01
    except ValueError:
        return None


def _iso(stamp: Stamp | None) -> str | None:
    if stamp is None:
        return None
    y, mo, d, h, mi, s, frac, zone = stamp
    return f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{'.' + frac if frac else ''}{zone}"


def _stamp(groups: tuple, day_month_name: bool = False) -> Stamp:
    y, mo, d = (groups[2], _MONTHS[groups[1]], groups[0]) if day_month_name else groups[:3]
    zone = groups[7] or ""
    if len(zone) > 1:  # ±hh, ±hhmm, ±hh:mm → ±hh:mm
        digits = zone[1:].replace(":", "")
        zone = f"{zone[0]}{digits[:2]}:{digits[2:4] or '00'}"
    return (int(y), int(mo), int(d), int(groups[3]), int(groups[4]), int(groups[5]), groups[6] or "", zone)


def _log_stamp(line: str, hint: list[int]) -> tuple[re.Match, Stamp] | None:
    """The stamp at the start of a plain log line; `hint` holds the index of the pattern that matched last."""
    for i in (hint[0], *range(len(_LOG_STAMPS))):
        pattern, day_month_name = _LOG_STAMPS[i]
        m = pattern.match(line)
        if m:
            hint[0] = i
            return m, _stamp(m.groups(), day_month_name)
    return None


def _epoch_stamp(value: float) -> Stamp | None:
    for scale in (1e9, 1e6, 1e3):  # nanoseconds, microseconds (journald), milliseconds
        if value > scale * 1e8:
            value /= scale
            break
    try:
        t = dt.datetime.fromtimestamp(value, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    frac = f"{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return (t.year, t.month, t.day, t.hour, t.minute, t.second, frac, "Z")


# --- parsers: one line → (text, seconds, stamp, host, program, severity) -----------------------------


def _syslog_fields(line: str) -> tuple | None:
    """(PRI text or None, stamp, host, program or None) for an RFC 3164 / 3339 / 5424 line; RFC 3164 stamps
    have year 0 here (the parser fills it in)."""
    m = _RFC5424.match(line)
    if m:
        stamp_m = _ISO_STAMP.match(m.group(2))
        if not stamp_m and m.group(2) != "-":
            return None
        stamp = _stamp(stamp_m.groups()) if stamp_m else None
        app = m.group(4)
        return m.group(1), stamp, None if m.group(3) == "-" else m.group(3), None if app == "-" else app
    m = _RFC3164.match(line)
    if m:
        g = m.groups()
        stamp = (0, _MONTHS[g[1]], int(g[2]), int(g[3]), int(g[4]), int(g[5]), "", "")
        tag = _TAG.match(g[7] or "")
        return g[0], stamp, g[6], tag.group(1) if tag else None
    m = _RFC3339_SYSLOG.match(line)
    if m:
        g = m.groups()
        tag = _TAG.match(g[10])
        if tag is None or g[9].upper() in _LEVEL_WORDS:  # `2024-… INFO app: …` is an application log, not syslog
            return None
        return g[0], _stamp(g[1:9]), g[9], tag.group(1)
    return None


def _syslog_parser(reference: dt.datetime) -> Callable[[str], Parsed]:
    state = {"year": None, "month": 0}

    def parse(line: str) -> Parsed:
        fields = None if line[0].isspace() else _syslog_fields(line)
        if fields is None:
            return line, None, None, None, None, None
        pri, stamp, host, program = fields
        text = line[len(pri) + 2:] if pri is not None else line
        severity = SEVERITIES[int(pri) % 8] if pri is not None and int(pri) < 192 else None
        if stamp is None:
            return text, None, None, host, program, severity
        if stamp[0] == 0:  # RFC 3164: no year in the line
            month = stamp[1]
            if state["year"] is None:
                state["year"] = reference.year - (month > reference.month)
            elif month < state["month"] - 6:
                state["year"] += 1
            state["month"] = month
            stamp = (state["year"], *stamp[1:])
        seconds = _seconds(stamp)
        return text, seconds, stamp if seconds is not None else None, host, program, severity

    return parse


def _reference_time(path: Path | str, year: int | None) -> dt.datetime:
    """What RFC 3164 years count from: December of `year`, else the file's modification time (now for URLs)."""
    if year is not None:
        return dt.datetime(year, 12, 31)
    if isinstance(path, Path) or "://" not in str(path):
        return dt.datetime.fromtimestamp(os.stat(path).st_mtime)
    return dt.datetime.now()


def _log_parser() -> Callable[[str], Parsed]:
    hint = [0]

    def parse(line: str) -> Parsed:
        found = None if line[0].isspace() else _log_stamp(line, hint)
        if found is None:
            return line, None, None, None, None, None
        m, stamp = found
        seconds = _seconds(stamp)
        level = _LEVEL_AFTER.match(line, m.end())
        word = level.group(1).upper() if level else ""
        severity = word.lower() if word in _LEVEL_WORDS else None
        return line, seconds, stamp if seconds is not None else None, None, None, severity

    return parse


def _jsonlog_parser(message_field: str | None, time_field: str | None, host_field: str | None
                    ) -> Callable[[str], Parsed]:
    messages = _paths((message_field,) if message_field else MESSAGE_FIELDS)
    times = _paths((time_field,) if time_field else TIME_FIELDS)
    hosts = _paths((host_field,) if host_field else HOST_FIELDS)
    programs, levels = _paths(PROGRAM_FIELDS), _paths(LEVEL_FIELDS)

    def parse(line: str) -> Parsed:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _BadLine(f"malformed JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
        if not isinstance(obj, dict):
            raise _BadLine(f"expected a JSON object, got {type(obj).__name__}; fix or remove the line")
        message = _lookup(obj, messages)
        if message is None:
            keys = ", ".join(list(obj)[:8]) or "none"
            raise _BadLine(f"no string field {' / '.join(name for name, _ in messages)} (keys: {keys}); "
                           "pass message_field with the right key")
        raw_time = _lookup(obj, times, (str, int, float))
        stamp = _json_stamp(raw_time)
        seconds = _seconds(stamp) if stamp else None
        host, program, level = _lookup(obj, hosts), _lookup(obj, programs), _lookup(obj, levels, (str, int))
        shown = raw_time if isinstance(raw_time, str) and not raw_time.isdigit() else _iso(stamp)
        head = [shown, host, f"{program}:" if program else None]
        head = [part for part in head if part]
        if head and not program:
            head[-1] += ":"
        text = " ".join((*head, message.rstrip("\n")))
        return text, seconds, stamp if seconds is not None else None, host, program, _level_name(level)

    return parse


def _level_name(level) -> str | None:
    """journald PRIORITY 0-7 and bunyan/pino 10-60 numbers as names; words lower-cased."""
    if level is None:
        return None
    if isinstance(level, int) or level.isdigit():
        n = int(level)
        return SEVERITIES[n] if n < 8 else _BUNYAN_LEVELS.get(n, str(n))
    return level.lower() or None


def _json_stamp(value) -> Stamp | None:
    if isinstance(value, str):
        if value.isdigit():  # journald's __REALTIME_TIMESTAMP: microseconds, as a string
            return _epoch_stamp(int(value))
        m = _ISO_STAMP.match(value)
        return _stamp(m.groups()) if m else None
    return _epoch_stamp(value) if isinstance(value, (int, float)) else None


def _paths(names: tuple[str, ...]) -> tuple[tuple[str, list[str] | None], ...]:
    return tuple((name, name.split(".") if "." in name else None) for name in names)


def _lookup(obj: dict, paths: tuple, types: type | tuple = str):
    """The first value of `types` at one of `paths` (from `_paths`): a key, or a dotted path into nested objects
    (`host.name`); a literal dotted key (Zeek's `id.orig_h`) wins."""
    for name, parts in paths:
        value = obj.get(name)
        if value is None and parts:
            value = obj
            for part in parts:
                value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, types) and not isinstance(value, bool):
            return value
    return None
