"""Web archives as Records: WARC `response` records (HTML → main text) and Common Crawl WET `conversion` records
(plain text), each with its language identified.

Libraries (the `security` extra): fastwarc iterates WARC records, resiliparse detects charsets and extracts the
main text, py3langid identifies the language with the model inside its package (nothing is downloaded). They are
imported inside functions, so importing this module costs nothing.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from megalang.data.readers import OnError, corrupt_compression_errors, first_line, open_raw
from megalang.data.records import Record
from megalang.errors import UserError

# Keys read_warc adds to `counts`:
#   records              WARC records read, of every type
#   documents            records yielded
#   skipped_record_type  warcinfo, request, metadata, revisit, resource (and response in a WET, conversion in a WARC)
#   skipped_not_html     responses whose payload is not HTML (images, PDFs, DNS records, ...)
#   skipped_status       responses whose HTTP status is not 200 (redirects, 404s, ...)
#   skipped_empty        no text, or fewer than min_text_chars characters after extraction
#   skipped_language     identified language not in `languages`
#   errors               broken records (and, with on_error, an unreadable rest of a file) reported to on_error
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
LANG_ID_CHARS = 1000  # py3langid: 100 % on 200-character texts in our en/es/de set; cost grows with length
HTTP_HEAD_BYTES = 64 << 10  # read this much of a response first, so skipped images and PDFs are never read whole
_WARC_START = re.compile(rb"WARC/1\.[01]\r?\n")
_WARC_TYPE = re.compile(rb"(?im)^WARC-Type:[ \t]*([a-z]+)")
_STATUS_LINE = re.compile(rb"HTTP/\d(?:\.\d)?[ \t]+(\d{3})")
_FIX = "re-create or re-download the file, or run with --errors skip to skip bad records"


def sniff_warc(head: bytes) -> str | None:
    """'warc', 'wet' or None, from the first (decompressed) bytes of a file: its name is not consulted.

    A WET is a WARC whose documents are `conversion` records (Common Crawl's extracted plain text); when the head
    ends before the first document, the warcinfo's WARC-Filename (…warc.wet.gz) tells.
    """
    head = head.lstrip(b"\r\n")
    if not _WARC_START.match(head):
        return None
    types = set(_WARC_TYPE.findall(head))
    if b"response" in types:
        return "warc"
    if b"conversion" in types or re.search(rb"(?im)^WARC-Filename:[^\r\n]*\.wet\b", head):
        return "wet"
    return "warc"


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    # norm_probs: the score is the top language's probability (0..1), usable as a threshold.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def identify_language(text: str) -> tuple[str, float]:
    """(language code, probability) of the text's language, from its first LANG_ID_CHARS characters: ISO 639-1
    where the language has one (en, es, de), else ISO 639-3 (yue, gug); ("und", 0.0) when the text has no letters."""
    sample = text[:LANG_ID_CHARS]
    if not any(c.isalpha() for c in sample):
        return "und", 0.0
    lang, prob = _identifier().classify(sample)
    return str(lang), round(float(prob), 4)


def supported_languages() -> frozenset[str]:
    return frozenset(_identifier().nb_classes)


def read_warc(
    path: Path | str,
    kind: str,
    languages: set[str] | frozenset[str] | None = None,
    on_error: OnError | None = None,
    counts: Counter | None = None,
    min_text_chars: int = 50,
) -> Iterator[Record]:
    """Records of one .warc/.wet file: plain, gzip (per record or whole), zstd or bzip2, told by content not name.

    kind "warc": each `response` with HTTP status 200 and an HTML payload → its main text (navigation, scripts and
    other boilerplate removed). kind "wet": each `conversion` record's text. Everything else is skipped and
    counted by reason in `counts` (keys above). `languages` keeps only documents identified as one of them.
    A broken record raises UserError naming the file and the record; with `on_error` it is reported and skipped.
    """
    if kind not in ("warc", "wet"):
        raise ValueError(f"kind must be 'warc' or 'wet', got {kind!r}")
    counts = Counter() if counts is None else counts
    wanted = _check_languages(languages)
    stream = _open_decompressed(path)
    try:
        head = stream.read(64 << 10)
    except corrupt_compression_errors() + (OSError,) as e:  # bz2 says OSError("Invalid data stream")
        _report(_corrupt_file(path, e), on_error, counts)
        return
    finally:
        stream.close()
    if not head.strip():
        return
    if sniff_warc(head) is None:
        raise UserError(f"{path}: not a WARC file (it does not start with a WARC/1.0 or WARC/1.1 header); "
                        "pass .warc, .warc.gz, .wet or .wet.gz files")
    with _open_decompressed(path) as stream:  # opened again: a .zst stream cannot seek back
        for index, rec in _iter_records(stream, path, on_error, counts):
            counts["records"] += 1
            where = f"{path}: record {index} ({rec.record_id or 'no WARC-Record-ID'})"
            try:
                doc = _document(rec, kind, where, counts)
            except UserError as e:
                _report(e, on_error, counts)
                continue
            if doc is None:
                continue
            text, title = doc
            if len(text.strip()) < max(min_text_chars, 1):
                counts["skipped_empty"] += 1
                continue
            lang, score = identify_language(text)
            if wanted is not None and lang not in wanted:
                counts["skipped_language"] += 1
                continue
            counts["documents"] += 1
            yield Record(text, _meta(rec, kind, lang, score, title))


def _check_languages(languages) -> frozenset[str] | None:
    if languages is None:
        return None
    wanted = frozenset(code.strip().lower() for code in languages)
    unknown = sorted(wanted - supported_languages())
    if unknown:
        raise UserError(f"languages: unknown code(s) {', '.join(unknown)}; use ISO 639-1 codes such as en, es, de (ISO 639-3 where none exists)")
    return wanted


def _meta(rec, kind: str, lang: str, score: float, title: str | None) -> dict:
    fields = {"date": rec.headers.get("WARC-Date"), "lang_score": score}
    if title:
        fields["title"] = title
    return {"format": kind, "record_id": rec.record_id, "url": rec.headers.get("WARC-Target-URI"), "lang": lang,
            "fields": json.dumps(fields, ensure_ascii=False)}


# --- reading the file --------------------------------------------------------------------------------


def _open_decompressed(path: Path | str):
    """The decompressed stream, the compression told by magic bytes, not by the name. Python's gzip reads Common
    Crawl's one-member-per-record files and reports a truncated member (EOFError), which fastwarc's own gzip
    reader passes over silently."""
    raw = open_raw(path)
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic == b"\x28\xb5\x2f\xfd":
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, "rb")
    return raw


def _corrupt_file(path, e: BaseException) -> UserError:
    return UserError(f"{path}: truncated or corrupt compressed data ({first_line(e)}); re-create or re-download the file")


def _iter_records(stream, path, on_error: OnError | None, counts: Counter):
    """(1-based index, fastwarc record) pairs. A record header that cannot be parsed, or corrupt compressed data, ends
    the file (reported to on_error when given): the records after it cannot be found again."""
    from fastwarc.warc import ArchiveIterator

    records = iter(ArchiveIterator(stream, parse_http=False))
    index, last_id = 0, None
    while True:
        try:
            rec = next(records)
        except StopIteration:
            return
        except corrupt_compression_errors() as e:
            error = _corrupt_file(path, e)
        except OSError as e:
            cause = f"record {index}'s Content-Length may be longer than its data" if index else "the file is corrupt"
            error = UserError(f"{path}: record {index + 1}, after {last_id or 'the start'}: invalid WARC header "
                              f"({first_line(e)}); {cause}; {_FIX}")
        else:
            index += 1
            last_id = rec.record_id
            yield index, rec
            continue
        _report(error, on_error, counts)
        return


def _report(error: UserError, on_error: OnError | None, counts: Counter) -> None:
    if on_error is None:
        raise error
    counts["errors"] += 1
    on_error(error)


def _document(rec, kind: str, where: str, counts: Counter) -> tuple[str, str | None] | None:
    """(text, title) of a record, or None after counting why it was skipped."""
    from fastwarc.warc import WarcRecordType

    wanted_type = WarcRecordType.response if kind == "warc" else WarcRecordType.conversion
    if rec.record_type != wanted_type:
        counts["skipped_record_type"] += 1
        return None
    if kind == "wet":
        block = _read_rest(rec, b"", where)
        return block.decode("utf-8", errors="replace"), None
    if not (rec.headers.get("Content-Type") or "").lower().startswith("application/http"):
        counts["skipped_not_html"] += 1  # dns:, whois: and other non-HTTP responses
        return None
    status, headers, body = _split_http(rec, where)
    if status != 200:
        counts["skipped_status"] += 1
        return None
    content_type = headers.get("content-type") or rec.headers.get("WARC-Identified-Payload-Type") or ""
    if _mime(content_type) not in HTML_TYPES:
        counts["skipped_not_html"] += 1
        return None
    body = _read_rest(rec, body, where, headers)
    body = _decode_transfer(body, headers, where)
    return _extract(body, _charset(content_type))


def _split_http(rec, where: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the start of the body, from the first HTTP_HEAD_BYTES of the block."""
    first = rec.reader.read(HTTP_HEAD_BYTES)
    end, sep = first.find(b"\r\n\r\n"), 4
    if end < 0:
        end, sep = first.find(b"\n\n"), 2
    if end < 0:
        what = "shorter than its WARC Content-Length" if len(first) < rec.content_length else "not terminated"
        raise UserError(f"{where}: broken HTTP response: headers {what} (truncated record); {_FIX}")
    lines = first[:end].replace(b"\r\n", b"\n").split(b"\n")
    status = _STATUS_LINE.match(lines[0])
    if status is None:
        raise UserError(f"{where}: broken HTTP response: no status line (starts {lines[0][:40]!r}); {_FIX}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return int(status.group(1)), headers, first[end + sep:]


def _read_rest(rec, start: bytes, where: str, headers: dict[str, str] | None = None) -> bytes:
    """The rest of the record's block after `start`; UserError when the data ends before a declared length."""
    body = start + rec.reader.read()
    if rec.reader.tell() < rec.content_length:
        raise UserError(f"{where}: record ends after {rec.reader.tell()} of its {rec.content_length} bytes "
                        f"(WARC Content-Length longer than the data); {_FIX}")
    declared = (headers or {}).get("content-length", "")
    chunked = "chunked" in (headers or {}).get("transfer-encoding", "").lower()
    # Crawlers truncate large payloads on purpose and say so in WARC-Truncated; only unannounced shortfalls are errors.
    if declared.isdigit() and not chunked and len(body) < int(declared) and not rec.headers.get("WARC-Truncated"):
        raise UserError(f"{where}: HTTP body has {len(body)} of its {declared} bytes "
                        f"(HTTP Content-Length longer than the data); {_FIX}")
    return body[: int(declared)] if declared.isdigit() and not chunked else body  # what follows is not the body


def _decode_transfer(body: bytes, headers: dict[str, str], where: str) -> bytes:
    """Undo chunked transfer coding and gzip/deflate/br content coding (Common Crawl stores payloads decoded and
    renames these headers X-Crawler-*, so there they are absent; other crawlers keep the bytes as sent)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body, where)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:  # servers send raw deflate as often as the zlib-wrapped form the RFC names
                return zlib.decompress(body, -zlib.MAX_WBITS)
        if encoding == "br":
            import brotli  # fastwarc's own dependency

            return brotli.decompress(body)
    except (zlib.error, _brotli_error()) as e:
        raise UserError(f"{where}: broken HTTP body: {encoding} data does not decompress ({first_line(e)}); {_FIX}") from None
    return body


def _brotli_error() -> type[BaseException]:
    try:
        import brotli

        return brotli.error
    except (ImportError, AttributeError):
        return zlib.error


def _dechunk(body: bytes, where: str) -> bytes:
    out, pos = [], 0
    while True:
        eol = body.find(b"\r\n", pos)
        size = body[pos:eol].split(b";")[0].strip() if eol >= 0 else b""
        try:
            n = int(size, 16)
        except ValueError:
            raise UserError(f"{where}: broken HTTP body: bad chunk size {size[:20]!r} at byte {pos}; {_FIX}") from None
        if n == 0:
            return b"".join(out)
        if eol + 2 + n > len(body):
            raise UserError(f"{where}: broken HTTP body: chunk of {n} bytes runs past the end of the record; {_FIX}")
        out.append(body[eol + 2:eol + 2 + n])
        pos = eol + 2 + n + 2


def _mime(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def _charset(content_type: str) -> str | None:
    match = re.search(r"(?i)charset\s*=\s*[\"']?([\w.:-]+)", content_type)
    return match.group(1) if match else None


def _extract(body: bytes, charset: str | None) -> tuple[str, str | None]:
    """Main text and title of an HTML page. The charset is the declared one, else UTF-8 when the bytes are valid
    UTF-8, else resiliparse's detection (which reads <meta charset>)."""
    import codecs

    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding
    from resiliparse.parse.html import HTMLTree

    try:
        codecs.lookup(charset or "")
    except LookupError:
        charset = None
    if charset is None:
        try:
            html = body.decode("utf-8")
        except UnicodeDecodeError:
            html = bytes_to_str(body, detect_encoding(body, from_html_meta=True) or "cp1252")
    else:
        html = bytes_to_str(body, charset)
    tree = HTMLTree.parse(html)
    # main_content drops navigation, headers/footers, sidebars; scripts and styles are never text.
    text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, comments=False)
    return text, (tree.title or "").strip() or None

