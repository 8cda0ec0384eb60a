"""data/web.py: WARC and WET files written here byte by byte (warcinfo, request, response and metadata records, HTTP
headers, HTML pages in English, Spanish and German), read into Records with main text and language, and the
bad-input cases (broken HTTP bodies, truncated gzip, a file that is no WARC)."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter

import pytest

pytest.importorskip("fastwarc")
pytest.importorskip("resiliparse")
pytest.importorskip("py3langid")

from megalang.data.web import identify_language, read_warc, sniff_warc
from megalang.errors import UserError

EN = ("The vulnerability allows a remote attacker to execute arbitrary code by sending a crafted request to the "
      "server. Administrators should install the patch as soon as possible and restrict access to the management "
      "interface. The vendor published an advisory with the affected versions and a workaround.")
ES = ("La vulnerabilidad permite a un atacante remoto ejecutar código arbitrario enviando una petición manipulada "
      "al servidor. Los administradores deben instalar el parche lo antes posible y restringir el acceso a la "
      "interfaz de gestión. El fabricante publicó un aviso con las versiones afectadas.")
DE = ("Die Schwachstelle erlaubt es einem entfernten Angreifer, durch eine manipulierte Anfrage beliebigen Code "
      "auszuführen. Administratoren sollten den Patch so bald wie möglich installieren und den Zugriff auf die "
      "Verwaltungsoberfläche einschränken. Der Hersteller hat eine Sicherheitsmitteilung veröffentlicht.")
NAV_WORDS = ("Home", "Products", "Careers", "Contact")


def page(title: str, body: str, lang: str) -> str:
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in NAV_WORDS)
    side = "".join(f'<li><a href="/tag/{i}">Related link number {i}</a></li>' for i in range(10))
    return (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>'
            '<script>var tracker = "BOILERPLATE_SCRIPT";</script><style>body { font-family: serif; }</style></head>'
            f'<body><header><nav><ul>{nav}</ul></nav></header><aside><ul>{side}</ul></aside>'
            f"<main><article><h1>{title}</h1><p>{body}</p><p>{body}</p></article></main>"
            "<footer>Copyright 2024 Example Corp. Privacy policy | Cookie settings</footer></body></html>")


def warc_record(wtype: str, block: bytes, uri: str | None = None, content_type: str | None = None,
                length: int | None = None, extra: tuple[str, ...] = ()) -> bytes:
    headers = ["WARC/1.0", f"WARC-Type: {wtype}", "WARC-Date: 2024-05-01T12:00:00Z", *extra,
               f"WARC-Record-ID: <urn:uuid:{uuid.uuid4()}>"]
    headers += [f"WARC-Target-URI: {uri}"] if uri else []
    headers += [f"Content-Type: {content_type}"] if content_type else []
    headers.append(f"Content-Length: {len(block) if length is None else length}")
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + block + b"\r\n\r\n"


def http_response(body: bytes, status: str = "200 OK", content_type: str = "text/html; charset=utf-8",
                  extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def response(uri: str, http: bytes, **kw) -> bytes:
    return warc_record("response", http, uri, "application/http; msgtype=response", **kw)


def request(uri: str) -> bytes:
    host = uri.split("/")[2]
    return warc_record("request", f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(), uri,
                       "application/http; msgtype=request")


def crawl_records() -> list[bytes]:
    """warcinfo, then request + response pairs: three HTML pages, a PNG, a 404, and a metadata record."""
    pages = [("http://example.com/advisory", page("Security advisory", EN, "en")),
             ("http://example.org/es/aviso", page("Aviso de seguridad", ES, "es")),
             ("http://example.org/de/hinweis", page("Sicherheitshinweis", DE, "de"))]
    records = [warc_record("warcinfo", b"software: megalang-test\r\nformat: WARC File Format 1.0\r\n",
                           content_type="application/warc-fields")]
    for uri, html in pages:
        records += [request(uri), response(uri, http_response(html.encode()))]
    records += [request("http://example.com/logo.png"),
                response("http://example.com/logo.png", http_response(b"\x89PNG\r\n\x1a\n" + bytes(64), content_type="image/png")),
                request("http://example.com/missing"),
                response("http://example.com/missing", http_response(page("Not found", EN, "en").encode(), "404 Not Found")),
                warc_record("metadata", b"fetchTimeMs: 12\r\n", "http://example.com/missing", "application/warc-fields")]
    return records


def wet_records() -> list[bytes]:
    info = warc_record("warcinfo", b"Software-Info: megalang-test\r\nisPartOf: CC-MAIN-2024-22\r\n",
                       content_type="application/warc-fields", extra=("WARC-Filename: CC-MAIN-00000.warc.wet.gz",))
    return [info] + [
        warc_record("conversion", text.encode(), uri, "text/plain")
        for uri, text in (("http://example.com/a", EN), ("http://example.org/b", ES), ("http://example.org/c", DE),
                          ("http://example.org/d", "   "))]


def per_record_gzip(records: list[bytes]) -> bytes:
    return b"".join(gzip.compress(r) for r in records)  # Common Crawl's layout: one gzip member per record


@pytest.fixture
def crawl(tmp_path):
    (tmp_path / "crawl.warc").write_bytes(b"".join(crawl_records()))
    (tmp_path / "crawl.warc.gz").write_bytes(per_record_gzip(crawl_records()))
    return tmp_path


def test_warc_yields_one_record_per_html_page_with_main_text_and_language(crawl):
    for name in ("crawl.warc", "crawl.warc.gz"):
        counts = Counter()
        records = list(read_warc(crawl / name, "warc", counts=counts))
        assert [r.meta["url"] for r in records] == [
            "http://example.com/advisory", "http://example.org/es/aviso", "http://example.org/de/hinweis"]
        assert [r.meta["lang"] for r in records] == ["en", "es", "de"]
        for r, body in zip(records, (EN, ES, DE)):
            assert body.split(". ")[0] in r.text
            for junk in ("BOILERPLATE_SCRIPT", "font-family", "Related link number", "Careers", "Cookie settings"):
                assert junk not in r.text, (junk, r.text)
            assert r.meta["format"] == "warc" and r.meta["record_id"].startswith("<urn:uuid:")
            fields = json.loads(r.meta["fields"])
            assert fields["date"] == "2024-05-01T12:00:00Z" and fields["lang_score"] > 0.9
        assert json.loads(records[1].meta["fields"])["title"] == "Aviso de seguridad"
        # 1 warcinfo + 5 requests + 5 responses + 1 metadata
        assert counts == Counter(records=12, documents=3, skipped_record_type=7, skipped_not_html=1, skipped_status=1)


def test_languages_filter_keeps_only_those_and_counts_the_rest(crawl):
    counts = Counter()
    records = list(read_warc(crawl / "crawl.warc.gz", "warc", languages={"en", "es"}, counts=counts))
    assert [r.meta["lang"] for r in records] == ["en", "es"]
    assert counts["skipped_language"] == 1 and counts["documents"] == 2
    with pytest.raises(UserError, match=r"unknown code\(s\) english; use ISO 639-1"):
        list(read_warc(crawl / "crawl.warc", "warc", languages={"english"}))


def test_wet_conversion_records_and_empty_text(tmp_path):
    path = tmp_path / "CC-MAIN-00000.warc.wet.gz"
    path.write_bytes(per_record_gzip(wet_records()))
    counts = Counter()
    records = list(read_warc(path, "wet", counts=counts))
    assert [(r.meta["format"], r.meta["url"], r.meta["lang"]) for r in records] == [
        ("wet", "http://example.com/a", "en"), ("wet", "http://example.org/b", "es"), ("wet", "http://example.org/c", "de")]
    assert records[0].text == EN and "title" not in json.loads(records[0].meta["fields"])
    assert counts == Counter(records=5, documents=3, skipped_record_type=1, skipped_empty=1)


def test_http_codings_and_charsets(tmp_path):
    chunked_body = page("Chunked", EN, "en").encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (chunked_body[:100], chunked_body[100:])) + b"0\r\n\r\n"
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
    latin1 = page("Café", ES, "es").replace('<meta charset="utf-8">', "").encode("latin-1")
    records = [response("http://example.com/chunked", chunked),
               response("http://example.com/gzip", http_response(gzip.compress(page("Gzip", DE, "de").encode()),
                                                                  extra="Content-Encoding: gzip\r\n")),
               response("http://example.org/latin1", http_response(latin1, content_type="text/html; charset=ISO-8859-1"))]
    (tmp_path / "codings.warc").write_bytes(b"".join(records))
    got = list(read_warc(tmp_path / "codings.warc", "warc"))
    assert [r.meta["lang"] for r in got] == ["en", "de", "es"]
    assert "arbitrary code" in got[0].text and "beliebigen Code" in got[1].text
    assert "código arbitrario" in got[2].text and json.loads(got[2].meta["fields"])["title"] == "Café"


def test_sniff_by_content_not_name(tmp_path):
    warc, wet = b"".join(crawl_records()), b"".join(wet_records())
    assert sniff_warc(warc) == "warc" and sniff_warc(wet) == "wet"
    assert sniff_warc(warc.replace(b"WARC/1.0", b"WARC/1.1")) == "warc"
    # A truncated head: the warcinfo's WARC-Filename alone says WET; a head cut inside a response still says WARC.
    assert sniff_warc(wet[: wet.index(b"WARC-Type: conversion")]) == "wet"
    assert sniff_warc(warc[: warc.index(b"WARC-Type: response") + 30]) == "warc"
    assert sniff_warc(b"\r\n" + warc[:20]) == "warc"
    assert sniff_warc(b"HTTP/1.1 200 OK\r\n") is None and sniff_warc(b"") is None
    assert sniff_warc(b'{"text": "WARC/1.0"}\n') is None
    # A WET under a .warc.gz name (and not gzip at all), and a zstd-compressed WARC under a plain name, are read by
    # what they hold.
    (tmp_path / "misnamed.warc.gz").write_bytes(wet)
    assert [r.meta["lang"] for r in read_warc(tmp_path / "misnamed.warc.gz", sniff_warc(wet), counts=Counter())] == [
        "en", "es", "de"]
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "crawl.warc").write_bytes(zstandard.ZstdCompressor().compress(warc))
    assert len(list(read_warc(tmp_path / "crawl.warc", "warc"))) == 3


@pytest.mark.parametrize("broken, message", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Le", "broken HTTP response: headers not terminated"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 9999\r\n\r\n<html>short</html>",
     "HTTP body has 18 of its 9999 bytes"),
    (b"<html>no status line</html>\r\n\r\n", "broken HTTP response: no status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\nnot gzip", "gzip data does not decompress"),
])
def test_broken_http_body_names_file_and_record_or_is_skipped(tmp_path, broken, message):
    bad = response("http://example.com/broken", broken)
    bad_id = bad.split(b"WARC-Record-ID: ")[1].split(b"\r\n")[0].decode()
    good = response("http://example.com/good", http_response(page("Fine", EN, "en").encode()))
    path = tmp_path / "broken.warc.gz"
    path.write_bytes(per_record_gzip([bad, good]))
    with pytest.raises(UserError, match=message) as e:
        list(read_warc(path, "warc"))
    assert str(path) in str(e.value) and f"record 1 ({bad_id})" in str(e.value) and "--errors skip" in str(e.value)
    errors, counts = [], Counter()
    assert [r.meta["url"] for r in read_warc(path, "warc", on_error=errors.append, counts=counts)] == [
        "http://example.com/good"]
    assert len(errors) == 1 and message in str(errors[0]) and counts["errors"] == 1 and counts["documents"] == 1


def test_warc_content_length_longer_than_the_data(tmp_path):
    good = response("http://example.com/good", http_response(page("Fine", EN, "en").encode()))
    last = response("http://example.com/cut", http_response(b"<html><p>cut</p></html>"), length=5000)
    (tmp_path / "end.warc").write_bytes(good + last)
    with pytest.raises(UserError, match=r"end\.warc: record 2 \(<urn:uuid:.*record ends after \d+ of its 5000 bytes"):
        list(read_warc(tmp_path / "end.warc", "warc"))
    # In the middle of a file, the overlong record swallows the next header: the rest of the file is lost.
    middle = response("http://example.com/over", http_response(b"<html><p>x</p></html>"), length=200)
    (tmp_path / "middle.warc").write_bytes(middle + good + good)
    with pytest.raises(UserError, match=r"middle\.warc: record 2, after <urn:uuid:.*invalid WARC header.*record 1's"):
        list(read_warc(tmp_path / "middle.warc", "warc"))
    errors, counts = [], Counter()
    assert list(read_warc(tmp_path / "middle.warc", "warc", on_error=errors.append, counts=counts)) == []
    assert len(errors) == 1 and counts["errors"] == 1 and counts["records"] == 1


def test_truncated_gzip_not_a_warc_and_empty(crawl, tmp_path):
    data = (crawl / "crawl.warc.gz").read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(data[:-40])
    with pytest.raises(UserError, match=r"cut\.warc\.gz: truncated or corrupt compressed data .*re-download"):
        list(read_warc(tmp_path / "cut.warc.gz", "warc"))
    errors = []
    list(read_warc(tmp_path / "cut.warc.gz", "warc", on_error=errors.append))
    assert len(errors) == 1 and "cut.warc.gz" in str(errors[0])
    # Cut far into a larger file: the pages before the cut are read, then the error names the file.
    (tmp_path / "long.warc.gz").write_bytes(per_record_gzip(crawl_records() * 40)[:-40])
    errors, counts = [], Counter()
    assert len(list(read_warc(tmp_path / "long.warc.gz", "warc", on_error=errors.append, counts=counts))) > 30
    assert len(errors) == 1 and "long.warc.gz: truncated or corrupt compressed data" in str(errors[0])
    (tmp_path / "notes.warc").write_text("these are my notes, not a web archive\n" * 5)
    (tmp_path / "page.warc.gz").write_bytes(gzip.compress(page("x", EN, "en").encode()))
    for name in ("notes.warc", "page.warc.gz"):
        with pytest.raises(UserError, match=rf"{name}: not a WARC file"):
            list(read_warc(tmp_path / name, "warc", on_error=errors.append))
    (tmp_path / "empty.warc").write_bytes(b"")
    (tmp_path / "empty.warc.gz").write_bytes(gzip.compress(b""))
    assert list(read_warc(tmp_path / "empty.warc", "warc")) == list(read_warc(tmp_path / "empty.warc.gz", "wet")) == []


def test_identify_language():
    assert identify_language(EN)[0] == "en" and identify_language(ES)[0] == "es" and identify_language(DE)[0] == "de"
    lang, score = identify_language("Bitte aktualisieren Sie Ihren Browser.")
    assert lang == "de" and 0 < score <= 1
    assert identify_language("1234 !!! ---") == ("und", 0.0)
