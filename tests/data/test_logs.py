"""data/logs.py: sniffing and reading RFC 3164/5424 syslog, JSON-lines logs, plain application logs and access logs
as time-window documents, with the bad-input errors and counts."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from datetime import datetime

import pytest

from megalang.data.logs import read_log, sniff_log
from megalang.errors import UserError

# /var/log/auth.log as rsyslog writes it (no <PRI>): web01 10:15-10:19 (one window), db01, then web01 again 10:31.
AUTH_LOG = """\
Dec  4 10:15:01 web01 sshd[2211]: Failed password for invalid user admin from 203.0.113.7 port 52144 ssh2
Dec  4 10:15:03 web01 sshd[2211]: Connection closed by invalid user admin 203.0.113.7 port 52144 [preauth]
Dec  4 10:17:00 web01 CRON[2300]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)
Dec  4 10:19:59 web01 sshd[2290]: Accepted publickey for deploy from 198.51.100.23 port 40022 ssh2: ED25519 SHA256:x
Dec  4 10:20:02 db01 sudo:   deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND=/usr/bin/systemctl restart pg
Dec  4 10:31:00 web01 sshd[2211]: Invalid user oracle from 203.0.113.9 port 41000
"""
# RFC 5424 section 6.5's examples, with structured data.
RFC5424 = """\
<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8
<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" \
eventSource="Application" eventID="1011"] An application event log entry...
<165>1 2003-10-11T22:16:00.000Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3"] Another entry
"""
ECS = [  # Filebeat/Elastic Common Schema: nested host.name, service.name, log.level
    {"@timestamp": "2025-12-04T10:15:01.120Z", "message": "GET /index.html 200", "host": {"name": "web01.example.com"},
     "service": {"name": "nginx"}, "log": {"level": "info"}},
    {"@timestamp": "2025-12-04T10:16:30.000Z", "message": "upstream timed out", "host": {"name": "web01.example.com"},
     "service": {"name": "nginx"}, "log": {"level": "error"}},
    {"@timestamp": "2025-12-04T10:17:00.000Z", "message": "user login", "host": {"name": "app01.example.com"},
     "service": {"name": "api"}, "log": {"level": "info"}},
]
APP_LOG = """\
2025-12-04 10:15:01,120 INFO  [main] com.example.shop.App - started in 2.1 s
2025-12-04 10:15:07,004 ERROR [http-nio-8080-exec-1] com.example.shop.Cart - checkout failed
java.lang.IllegalStateException: cart is empty
\tat com.example.shop.Cart.checkout(Cart.java:42)
\tat com.example.shop.Api.post(Api.java:17)
Caused by: java.lang.NullPointerException
\t... 2 more

2025-12-04 10:21:00,000 WARN  [main] com.example.shop.App - slow response 2300 ms
"""
ACCESS_LOG = """\
203.0.113.7 - - [04/Dec/2025:10:15:01 +0100] "GET / HTTP/1.1" 200 612 "-" "curl/8.5.0"
198.51.100.23 - alice [04/Dec/2025:10:15:02 +0100] "POST /login HTTP/1.1" 302 0 "https://example.com/" "Mozilla/5.0"
192.0.2.44 - - [04/Dec/2025:10:25:00 +0100] "GET /robots.txt HTTP/1.1" 404 153 "-" "Googlebot/2.1"
"""


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def read(path, kind, **kw):
    counts = Counter()
    records = list(read_log(path, kind, counts=counts, **kw))
    return records, counts


@pytest.mark.parametrize("text, kind", [
    (AUTH_LOG, "syslog"), (RFC5424, "syslog"), ("<38>" + AUTH_LOG.replace("\n", "\n<38>")[:-4], "syslog"),
    ("2025-12-04T10:15:01.120+01:00 web01 sshd[2211]: Accepted password for deploy from 192.0.2.1 port 22\n", "syslog"),
    (jsonl(ECS), "jsonlog"), (APP_LOG, "log"), (ACCESS_LOG, "log"),
    ("2025/12/04 10:15:01 [error] 311#311: *7 open() failed (2: No such file or directory)\n", "log"),
    ("Just some prose.\nIt mentions 2025-12-04 10:15:01 once.\nNothing else.\n", None),
    ("time,value\n2025-12-04 10:15:01,3.5\n2025-12-04 10:15:02,3.7\n", None),  # CSV, not a log
    (jsonl([{"text": "a document"}, {"text": "another", "timestamp": "2025-12-04"}]), None),  # a corpus, not a log
    ("", None), ("\n\n", None), ("\ufeff\n" + AUTH_LOG, "syslog"),
])
def test_sniff_by_content(text, kind):
    assert sniff_log(text.encode()) == kind


def test_sniff_ignores_a_cut_last_line_and_binary(tmp_path):
    head = (AUTH_LOG * 200).encode()[:4000]  # cut mid-line, the way a 64 KiB head is
    assert not head.endswith(b"\n") and sniff_log(head) == "syslog"
    assert sniff_log(jsonl(ECS * 50).encode()[:3001]) == "jsonlog"  # a cut JSON object is not counted against
    assert sniff_log("2025-12-04 10:15:01 INFO café ok\n".encode()[:-3]) == "log"  # cut inside a UTF-8 sequence
    assert sniff_log(b"\x7fELF\x02\x01\x00\x00" + APP_LOG.encode()) is None
    misnamed = tmp_path / "report.csv"  # the name says nothing: content decides
    misnamed.write_text(AUTH_LOG)
    assert sniff_log(misnamed.read_bytes()[:65536]) == "syslog"


def test_rfc3164_documents_by_host_and_window(tmp_path):
    path = tmp_path / "auth.log"
    path.write_text(AUTH_LOG)
    records, counts = read(path, "syslog", year=2025)
    assert [(r.meta["record_id"], r.meta["host"], r.meta["time"]) for r in records] == [
        ("auth.log:1", "web01", "2025-12-04T10:15:01"),
        ("auth.log:5", "db01", "2025-12-04T10:20:02"),
        ("auth.log:6", "web01", "2025-12-04T10:31:00"),
    ]
    assert records[0].text == "\n".join(AUTH_LOG.splitlines()[:4])
    assert records[0].meta["program"] == "sshd" and records[0].meta["format"] == "syslog"
    assert json.loads(records[0].meta["fields"]) == {"lines": 4, "programs": {"sshd": 3, "CRON": 1},
                                                     "time_end": "2025-12-04T10:19:59"}
    assert records[1].meta["program"] == "sudo"
    assert counts == {"bytes": len(AUTH_LOG), "lines": 6, "documents": 3}
    # A 60 s window cuts web01's first four lines into 10:15:01-10:15:03 and 10:17:00-10:19:59 (two windows).
    small, _ = read(path, "syslog", year=2025, window_s=60)
    assert [r.meta["record_id"] for r in small] == [f"auth.log:{n}" for n in (1, 3, 4, 5, 6)]


def test_rfc3164_year_from_mtime_and_new_year(tmp_path):
    path = tmp_path / "auth.log.1"
    path.write_text("Dec 31 23:58:00 web01 sshd[1]: a\nJan  1 00:01:00 web01 sshd[1]: b\n")
    stamp = datetime(2026, 1, 1, 0, 2).timestamp()
    os.utime(path, (stamp, stamp))  # rotated on 1 January 2026: December is 2025's
    (record,) = list(read_log(path, "syslog"))
    assert record.meta["time"] == "2025-12-31T23:58:00"
    assert json.loads(record.meta["fields"])["time_end"] == "2026-01-01T00:01:00"


def test_pri_is_stripped_and_counted_as_severity(tmp_path):
    path = tmp_path / "messages"
    path.write_text("<38>Dec  4 10:15:01 web01 sshd[2211]: Accepted password for deploy from 192.0.2.1 port 22 ssh2\n"
                    "<35>Dec  4 10:15:02 web01 sshd[2211]: error: PAM: Authentication failure for root\n")
    (record,) = list(read_log(path, "syslog", year=2025))
    assert record.text.startswith("Dec  4 10:15:01 web01 sshd[2211]: Accepted") and "<3" not in record.text
    assert json.loads(record.meta["fields"])["severity"] == {"info": 1, "err": 1}


def test_rfc5424_with_structured_data(tmp_path):
    path = tmp_path / "remote.log"
    path.write_text(RFC5424)
    records, counts = read(path, "syslog", window_s=60)
    assert [r.meta["record_id"] for r in records] == ["remote.log:1", "remote.log:3"]
    first = records[0]
    assert first.text.splitlines()[1].startswith('1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 '
                                                 '[exampleSDID@32473 iut="3"')
    assert first.meta["host"] == "mymachine.example.com" and first.meta["time"] == "2003-10-11T22:14:15.003Z"
    assert first.meta["program"] == "su"  # tie between su and evntslog: the first seen
    assert json.loads(first.meta["fields"]) == {"lines": 2, "programs": {"su": 1, "evntslog": 1},
                                                "time_end": "2003-10-11T22:14:15.003Z",
                                                "severity": {"crit": 1, "notice": 1}}
    assert counts["documents"] == 2


def test_jsonlog_ecs_nested_fields_and_rendering(tmp_path):
    path = tmp_path / "filebeat.ndjson"
    path.write_text(jsonl(ECS))
    records, counts = read(path, "jsonlog")
    assert [r.meta["host"] for r in records] == ["web01.example.com", "app01.example.com"]
    assert records[0].text == ("2025-12-04T10:15:01.120Z web01.example.com nginx: GET /index.html 200\n"
                               "2025-12-04T10:16:30.000Z web01.example.com nginx: upstream timed out")
    assert records[0].meta["time"] == "2025-12-04T10:15:01.120Z" and records[0].meta["program"] == "nginx"
    assert records[0].meta["format"] == "jsonlog"
    assert json.loads(records[0].meta["fields"])["severity"] == {"info": 1, "error": 1}
    assert counts["lines"] == 3 and counts["documents"] == 2


def test_jsonlog_zeek_docker_journald_shapes(tmp_path):
    zeek = tmp_path / "notice.log"  # Zeek JSON: epoch `ts`, literal dotted keys; the message is in `msg`
    zeek.write_text(jsonl([{"ts": 1764843301.5, "id.orig_h": "192.0.2.10", "note": "SSH::Password_Guessing",
                            "msg": "192.0.2.10 appears to be guessing SSH passwords"}]))
    (record,) = list(read_log(zeek, "jsonlog", host_field="id.orig_h"))
    assert record.text == "2025-12-04T10:15:01.5Z 192.0.2.10: 192.0.2.10 appears to be guessing SSH passwords"
    assert record.meta["host"] == "192.0.2.10" and record.meta["time"] == "2025-12-04T10:15:01.5Z"
    docker = tmp_path / "container-json.log"
    docker.write_text(jsonl([{"log": "listening on :8080\n", "stream": "stdout",
                              "time": "2025-12-04T10:15:01.000000001Z"}]))
    assert [r.text for r in read_log(docker, "jsonlog")] == ["2025-12-04T10:15:01.000000001Z: listening on :8080"]
    journal = tmp_path / "journal.json"  # journalctl -o json
    journal.write_text(jsonl([{"__REALTIME_TIMESTAMP": "1764843301000000", "_HOSTNAME": "web01", "PRIORITY": "4",
                               "SYSLOG_IDENTIFIER": "sshd",
                               "MESSAGE": "Invalid user test from 203.0.113.5 port 4000"}]))
    (record,) = list(read_log(journal, "jsonlog"))
    assert record.text == "2025-12-04T10:15:01Z web01 sshd: Invalid user test from 203.0.113.5 port 4000"
    assert json.loads(record.meta["fields"])["severity"] == {"warning": 1}
    nested = tmp_path / "nested.jsonl"
    nested.write_text(jsonl([{"event": {"original": "raw line", "created": "2025-12-04T10:15:01Z"}}]))
    (record,) = list(read_log(nested, "jsonlog", message_field="event.original", time_field="event.created"))
    assert record.text == "2025-12-04T10:15:01Z: raw line" and record.meta["time"] == "2025-12-04T10:15:01Z"


def test_app_log_keeps_stack_traces_with_their_line(tmp_path):
    path = tmp_path / "shop.log"
    path.write_text(APP_LOG)
    records, counts = read(path, "log")
    assert [r.meta["record_id"] for r in records] == ["shop.log:1", "shop.log:9"]
    assert records[0].text == "\n".join(APP_LOG.splitlines()[:7])
    assert records[0].meta["host"] is None and records[0].meta["time"] == "2025-12-04T10:15:01.120"
    assert json.loads(records[0].meta["fields"]) == {"lines": 7, "programs": {}, "time_end": "2025-12-04T10:15:07.004",
                                                     "severity": {"info": 1, "error": 1}}
    assert counts == {"bytes": len(APP_LOG), "lines": 8, "lines_untimed": 5, "lines_blank": 1, "documents": 2}


def test_access_log_windows_ignore_the_client_address(tmp_path):
    path = tmp_path / "access.log"
    path.write_text(ACCESS_LOG)
    records, _ = read(path, "log")
    assert [r.text for r in records] == [ACCESS_LOG.splitlines()[0] + "\n" + ACCESS_LOG.splitlines()[1],
                                         ACCESS_LOG.splitlines()[2]]
    assert records[0].meta["time"] == "2025-12-04T10:15:01+01:00" and records[0].meta["host"] is None


def test_documents_are_cut_at_max_lines_and_bytes(tmp_path):
    path = tmp_path / "shop.log"
    path.write_text(APP_LOG)
    records, counts = read(path, "log", max_doc_lines=3)
    assert [len(r.text.splitlines()) for r in records] == [3, 3, 1, 1]
    assert counts["documents_cut"] == 2
    # A part that starts inside the stack trace carries the time of the line it continues.
    assert records[1].text.startswith("\tat com.example.shop.Cart.checkout")
    assert records[1].meta["time"] == "2025-12-04T10:15:07.004"
    sized, _ = read(path, "log", max_doc_bytes=120)
    assert all(len(r.text.encode()) <= 120 for r in sized) and len(sized) > 2


def test_gzip_and_empty_files(tmp_path):
    path = tmp_path / "auth.log.gz"
    path.write_bytes(gzip.compress(AUTH_LOG.encode()))
    assert sniff_log(gzip.decompress(path.read_bytes())[:65536]) == "syslog"
    assert [r.text for r in read_log(path, "syslog", year=2025)] == [
        r.text for r in read_log(_write(tmp_path / "auth.log", AUTH_LOG), "syslog", year=2025)]
    for name, data in (("empty.log", b""), ("blank.log", b"\n\n"), ("empty.log.gz", gzip.compress(b""))):
        records, counts = read(_write(tmp_path / name, data), "log")
        assert records == [] and counts["files_empty"] == 1 and counts["documents"] == 0


def _write(path, data):
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_bad_lines_raise_with_file_and_line_or_are_skipped(tmp_path):
    lines = AUTH_LOG.encode().splitlines(keepends=True)
    bad = b"Dec  4 10:15:04 web01 sshd[1]: user \xff\xfe\n"
    path = _write(tmp_path / "auth.log", b"".join(lines[:2] + [bad] + lines[2:]))
    with pytest.raises(UserError, match=r"auth\.log:3: invalid UTF-8 .*convert the file to UTF-8"):
        list(read_log(path, "syslog", year=2025))
    errors = []
    records, counts = read(path, "syslog", year=2025, on_error=errors.append)
    assert counts["lines_skipped"] == 1 and counts["lines"] == 6 and len(records) == 3
    assert len(errors) == 1 and "auth.log:3" in str(errors[0])
    nul = _write(tmp_path / "crashed.log", APP_LOG.encode() + b"\0\0\0\0\n")
    with pytest.raises(UserError, match=r"crashed\.log:10: NUL bytes"):
        list(read_log(nul, "log"))


def test_huge_line_raises(tmp_path):
    path = _write(tmp_path / "big.log", "2025-12-04 10:15:01 INFO ok\n2025-12-04 10:15:02 INFO " + "x" * 5000)
    with pytest.raises(UserError, match=r"big\.log:2: line longer than max_doc_bytes \(1000\)"):
        list(read_log(path, "log", max_doc_bytes=1000, on_error=lambda e: None))


def test_bad_jsonlog_lines(tmp_path):
    path = _write(tmp_path / "app.jsonl", jsonl(ECS[:1]) + "not json at all\n" + '["a list"]\n'
                  + json.dumps({"@timestamp": "2025-12-04T10:15:09Z", "event": "no message"}) + "\n" + jsonl(ECS[1:2]))
    with pytest.raises(UserError, match=r"app\.jsonl:2: malformed JSON"):
        list(read_log(path, "jsonlog"))
    errors = []
    records, counts = read(path, "jsonlog", on_error=errors.append)
    assert [str(e).split(": ", 1)[0] for e in errors] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "expected a JSON object" in str(errors[1])
    assert "no string field message / msg / log / MESSAGE" in str(errors[2])
    assert "keys: @timestamp, event" in str(errors[2])
    assert counts["lines_skipped"] == 3 and counts["lines"] == 2 and len(records) == 1


def test_truncated_gzip_and_unknown_kind(tmp_path):
    full = gzip.compress(AUTH_LOG.encode() * 500)
    path = _write(tmp_path / "auth.log.gz", full[: len(full) // 2])
    with pytest.raises(UserError, match=r"auth\.log\.gz: truncated or corrupt gzip"):
        list(read_log(path, "syslog", year=2025, on_error=lambda e: None))
    with pytest.raises(UserError, match="unknown log kind 'csv'"):
        list(read_log(path, "csv"))
