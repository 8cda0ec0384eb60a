"""Documents from input files: finding the files (paths, folders, globs, fsspec URLs) and reading text, JSONL,
JSON arrays, Parquet and Hugging Face `save_to_disk` folders (Arrow), plain or .gz/.zst/.bz2-compressed.

Every reader streams (one document, one JSONL line or one Parquet/Arrow batch at a time) and turns bad input into
a one-line `UserError` that names the file (and line) and says what to do.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megalang.data.sources import matches_any
from megalang.errors import UserError

TEXT_EXTENSIONS = frozenset(
    ".txt .text .md .markdown .rst .adoc .tex .org "
    ".py .pyi .pyx .ipynb .c .h .cc .cpp .cxx .hpp .hh .cu .cuh .m .mm .java .kt .kts .scala .groovy .go .rs "
    ".swift .js .mjs .cjs .jsx .ts .tsx .vue .svelte .rb .php .pl .pm .lua .r .jl .hs .ml .mli .ex .exs .erl "
    ".clj .dart .cs .fs .vb .zig .nim .sh .bash .zsh .fish .ps1 .bat .sql .html .htm .xml .css .scss .less "
    ".toml .yaml .yml .ini .cfg .conf .proto .graphql .cmake .mk .dockerfile .gradle .csv .tsv".split()
)
COMPRESSIONS = (".gz", ".zst", ".bz2")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json.gz") + tuple(
    f"{ext}{c}" for ext in (".jsonl", ".ndjson", ".json") for c in COMPRESSIONS[1:]
)
JSON_SUFFIXES = (".json",)  # a JSON array of records (or JSON Lines under a .json name)
PARQUET_SUFFIXES = (".parquet",)
ARROW_SUFFIXES = (".arrow",)  # Hugging Face `Dataset.save_to_disk` shards (Arrow IPC streams)
_HF_METADATA = frozenset({"state.json", "dataset_info.json", "dataset_dict.json"})
_GLOB_CHARS = frozenset("*?[")
_PARQUET_BATCH_ROWS = 1024

Document = tuple[str, str]  # (text, source)
OnError = Callable[[UserError], None]


@dataclass
class InputFiles:
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # unknown file types met while walking folders / globs


# Names of logs and web archives, which `data prepare` reads by their content (data/structured.py): `.log`,
# rotated `.log.1`, syslog's own files (messages, secure, auth.log, ...) and WARC/WET, each optionally compressed.
STRUCTURED_NAME = re.compile(
    r"(?:\.log(?:\.\d+)?|\.warc|\.wet|(?:^|/)(?:syslog|messages|secure|auth\.log|kern\.log|daemon\.log|"
    r"user\.log|maillog|cron)(?:\.\d+)?)(?:\.gz|\.zst|\.bz2)?$"
)


def file_format(path: Path | str) -> str | None:
    """'text', 'jsonl', 'json', 'parquet', 'arrow', 'structured' (a log or web archive: read as plain text here,
    by content in `data prepare`), or None for a file type megalang does not read."""
    name = file_name(path).lower()
    if STRUCTURED_NAME.search(name):
        return "structured"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name in _HF_METADATA:
        return None
    if name.endswith(JSON_SUFFIXES):
        return "json"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(ARROW_SUFFIXES):
        return "arrow"
    for c in ("",) + COMPRESSIONS:
        base = name.removesuffix(c) if c else name
        if (c == "" or base != name) and os.path.splitext(base)[1] in TEXT_EXTENSIONS:
            return "text"
    return None


def file_name(path: Path | str) -> str:
    return path.name if isinstance(path, Path) else str(path).rstrip("/").rsplit("/", 1)[-1]


def is_url(item: str) -> bool:
    """fsspec URLs (s3://, gs://, hdfs://, memory://, http://…); file:// and plain paths are local."""
    return "://" in str(item) and not str(item).startswith("file://")


def find_input_files(inputs: list[str], exclude: Sequence[str] = (), out: str | None = None) -> InputFiles:
    """Expand files, folders (recursively) and globs, in a deterministic order, each file once.

    A file named explicitly must be readable; files of unknown type found inside folders/globs are skipped.
    `out` (the stage's output folder) is never read, so re-running into a folder inside the input is safe.
    """
    found = InputFiles()
    seen: set[Path] = set()
    never = [str(Path(p).resolve()) for p in (out, f"{out}.tmp") if out]
    for item in inputs:
        if is_url(item):
            for url in find_remote_files(item):
                if url not in seen:
                    seen.add(url)
                    (found.files if file_format(url) else found.skipped).append(url)
            continue
        if _GLOB_CHARS & set(item):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                raise UserError(f"{item}: glob matches no files; check the pattern (quote it in the shell)")
            candidates = [p for m in matches for p in _walk(Path(m), exclude)]
        elif Path(item).is_dir():
            candidates = _walk(Path(item), exclude)
        elif Path(item).exists():
            if file_format(Path(item)) is None:
                raise UserError(f"{item}: unsupported file type; use text files ({', '.join(sorted(TEXT_EXTENSIONS)[:6])}, ...), "
                                f"JSONL ({', '.join(JSONL_SUFFIXES)}) or Parquet")
            candidates = [Path(item)]
        else:
            raise UserError(f"{item}: no such file or folder; check --input")
        for path in candidates:
            resolved = path.resolve()
            if resolved in seen or any(str(resolved).startswith(n + os.sep) for n in never):
                continue
            seen.add(resolved)
            (found.files if file_format(path) else found.skipped).append(resolved)
    return found


def find_remote_files(url: str) -> list[str]:
    """Files behind an fsspec URL (a file, a folder walked recursively, or a glob), as full URLs, sorted."""
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
        if _GLOB_CHARS & set(root):
            paths = sorted(fs.glob(root))
        elif fs.isdir(root):
            paths = sorted(fs.find(root))
        elif fs.exists(root):
            paths = [root]
        else:
            raise UserError(f"{url}: no such file or folder; check the URL")
    except UserError:
        raise
    except ImportError as e:
        raise UserError(f"{url}: this URL scheme needs an extra package ({e.name or e}); pip install it") from None
    except Exception as e:  # network, auth and DNS errors come as many different types
        raise UserError(f"{url}: unreachable ({type(e).__name__}: {first_line(e)}); check the URL and credentials") from None
    if not paths:
        raise UserError(f"{url}: matches no files; check the URL")
    return [fs.unstrip_protocol(p) for p in paths]


def input_size(path: Path | str) -> int:
    if isinstance(path, Path):
        return path.stat().st_size
    import fsspec

    fs, p = fsspec.core.url_to_fs(str(path))
    return int(fs.size(p) or 0)


def iter_input_files(inputs: list[str], exclude: Sequence[str] = ()) -> list[Path]:
    """The readable files among `inputs` (see `find_input_files`)."""
    return find_input_files(inputs, exclude).files


def _walk(root: Path, exclude: Sequence[str]) -> list[Path]:
    if root.is_file():
        return [] if _excluded(str(root), exclude) else [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning matters: the stdlib's site-packages alone can be 20x the size of the code we want.
        dirnames[:] = sorted(d for d in dirnames if not _excluded(os.path.join(dirpath, d) + "/", exclude))
        if "state.json" in filenames and any(f.endswith(ARROW_SUFFIXES) for f in filenames):
            filenames = [f for f in filenames if f.endswith(ARROW_SUFFIXES)]  # an HF dataset: only its data
        files += [Path(dirpath, f) for f in filenames if not _excluded(os.path.join(dirpath, f), exclude)]
    return sorted(files)  # by path components: the order `ls -R | sort` would suggest, the same on every machine


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    return matches_any(path, patterns)  # data/sources.py: the whole path or any trailing part of it


# --- readers ----------------------------------------------------------------------------------------


def read_documents(
    path: str | os.PathLike, text_field: str = "text", max_doc_bytes: int = 64 << 20, on_error: OnError | None = None
) -> Iterator[Document]:
    """Yield (text, source) for every document in one file; `source` is the file's absolute path (or its URL).

    Bad input raises UserError, except that with `on_error` set a bad JSON line is reported to it and skipped.
    """
    path = path if isinstance(path, str) and is_url(path) else Path(path)
    kind = file_format(path)
    if kind in ("text", "structured"):
        yield read_text_file(path, max_doc_bytes), source_of(path)
    elif kind == "jsonl":
        yield from read_jsonl(path, text_field, max_doc_bytes, on_error)
    elif kind == "json":
        yield from read_json(path, text_field, max_doc_bytes, on_error)
    elif kind == "parquet":
        yield from read_parquet(path, text_field, max_doc_bytes)
    elif kind == "arrow":
        yield from read_arrow(path, text_field, max_doc_bytes)
    else:
        raise UserError(f"{path}: unsupported file type; expected text, JSONL, JSON, Parquet or Arrow")


def source_of(path: Path | str) -> str:
    return str(path.resolve()) if isinstance(path, Path) else str(path)


def open_raw(path: Path | str):
    """A binary stream of the stored bytes, local or through fsspec."""
    if isinstance(path, Path):
        return open(path, "rb")
    import fsspec

    try:
        return fsspec.open(str(path), "rb").open()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the URL") from None
    except Exception as e:
        raise UserError(f"{path}: unreachable ({type(e).__name__}: {first_line(e)}); check the URL and credentials") from None


def open_stream(path: Path | str):
    """A binary stream of the decompressed bytes (.gz, .zst, .bz2 by name)."""
    name = file_name(path).lower()
    raw = open_raw(path)
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw, "rb")
    if name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return raw


def corrupt_compression_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (gzip.BadGzipFile, EOFError, zlib.error)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    return errors


def corrupt_file_error(path: Path | str, e: BaseException) -> UserError | None:
    """The one-line UserError for a truncated or corrupt compressed file (every reader's), or None where `e` is
    something else — a missing file, or an OSError on a file that is not compressed — for the caller to re-raise.
    bz2 reports bad data as a plain OSError("Invalid data stream"), hence the check on the name."""
    if isinstance(e, FileNotFoundError):
        return None
    if not isinstance(e, corrupt_compression_errors()) and not file_name(path).lower().endswith(COMPRESSIONS):
        return None
    return UserError(f"{path}: truncated or corrupt {compression_name(path)} ({first_line(e)}); "
                     "re-create or re-download the file")


def compression_name(path: Path | str) -> str:
    name = file_name(path).lower()
    return "zstd" if name.endswith(".zst") else "bzip2" if name.endswith(".bz2") else "gzip"


def read_text_file(path: Path | str, max_doc_bytes: int) -> str:
    if isinstance(path, Path) and not path.name.lower().endswith(COMPRESSIONS):
        size = path.stat().st_size
        if size > max_doc_bytes:
            raise _too_large(path, size, max_doc_bytes)
    try:
        with open_stream(path) as f:
            data = f.read(max_doc_bytes + 1)
    except (*corrupt_compression_errors(), OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UserError(f"{path}: truncated or corrupt {compression_name(path)} ({first_line(e)}); re-create or re-download the file") from None
    if len(data) > max_doc_bytes:
        raise _too_large(path, f">{max_doc_bytes}", max_doc_bytes)
    if (nul := data.find(b"\0")) >= 0:
        raise UserError(f"{path}: binary file (NUL byte at offset {nul}); remove it from the input or --exclude it")
    return decode_utf8(data, str(path)).removeprefix("\ufeff")


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: invalid UTF-8 at byte offset {e.start}; convert the file to UTF-8 or exclude it") from None


def read_jsonl(path: Path | str, text_field: str, max_doc_bytes: int, on_error: OnError | None = None) -> Iterator[Document]:
    source = source_of(path)
    try:
        with open_stream(path) as f:
            lineno = 0
            # readline(limit) keeps memory bounded even when a "line" is a whole multi-GB file without newlines.
            while line := f.readline(max_doc_bytes + 1):
                lineno += 1
                if len(line) > max_doc_bytes and not line.endswith(b"\n"):
                    raise _too_large(f"{path}:{lineno}", f">{max_doc_bytes}", max_doc_bytes)
                if not line.strip():
                    continue
                try:
                    yield parse_jsonl_line(line, f"{path}:{lineno}", text_field), source
                except UserError as e:
                    if on_error is None:
                        raise
                    on_error(e)
    except (*corrupt_compression_errors(), OSError) as e:
        if (error := corrupt_file_error(path, e)) is None:
            raise
        raise error from None


def parse_jsonl_line(line: bytes, where: str, text_field: str) -> str:
    try:
        record = json.loads(decode_utf8(line, where))
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
    return record_text(record, where, text_field)


def record_text(record, where: str, text_field: str) -> str:
    """The text of one JSON record; `text_field` may be a dotted path into nested objects (`meta.body`)."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object with a '{text_field}' field, got {type(record).__name__}")
    value = record
    if text_field in record:
        value = record[text_field]
    else:
        for part in text_field.split("."):
            if not isinstance(value, dict) or part not in value:
                keys = ", ".join(list(record)[:8]) or "none"
                raise UserError(f"{where}: no '{text_field}' field (keys: {keys}); pass --text-field with the right key")
            value = value[part]
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{text_field}' is {type(value).__name__}, expected a string")
    return value


def read_json(path: Path | str, text_field: str, max_doc_bytes: int, on_error: OnError | None = None) -> Iterator[Document]:
    """A `.json` file: an array of records (read whole, so at most max_doc_bytes), else JSON Lines."""
    with open_stream(path) as f:
        head = f.read(64).lstrip()
    if not head.startswith(b"["):
        yield from read_jsonl(path, text_field, max_doc_bytes, on_error)
        return
    with open_stream(path) as f:
        data = f.read(max_doc_bytes + 1)
    if len(data) > max_doc_bytes:
        raise UserError(f"{path}: JSON array larger than max_doc_bytes ({max_doc_bytes}); convert it to JSON Lines")
    try:
        records = json.loads(decode_utf8(data, str(path)))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed JSON ({e.msg} at line {e.lineno} column {e.colno}); fix the file") from None
    source = source_of(path)
    for i, record in enumerate(records):
        try:
            yield record_text(record, f"{path}: item {i + 1}", text_field), source
        except UserError as e:
            if on_error is None:
                raise
            on_error(e)


def read_parquet(path: Path | str, text_field: str, max_doc_bytes: int) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(open_raw(path) if isinstance(path, str) else path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({first_line(e)}); re-create it") from None
    _check_text_column(path, pf.schema_arrow, text_field)
    batches = pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field])
    yield from _column_documents(path, batches, max_doc_bytes, "Parquet")


def read_arrow(path: Path | str, text_field: str, max_doc_bytes: int) -> Iterator[Document]:
    """One shard of a Hugging Face dataset saved with `save_to_disk` (an Arrow IPC stream), batch by batch."""
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(open_raw(path))
    except (pa.ArrowException, OSError):
        try:
            reader = pa.ipc.open_file(open_raw(path))
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: not a readable Arrow file ({first_line(e)}); re-save the dataset") from None
    _check_text_column(path, reader.schema, text_field)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        batches = (reader.get_batch(i).select([text_field]) for i in range(reader.num_record_batches))
    else:
        batches = (batch.select([text_field]) for batch in reader)
    yield from _column_documents(path, batches, max_doc_bytes, "Arrow")


def _check_text_column(path, schema, text_field: str) -> None:
    import pyarrow as pa

    if text_field not in schema.names:
        raise UserError(f"{path}: no column '{text_field}' (columns: {', '.join(schema.names[:8])}); pass --text-field")
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UserError(f"{path}: column '{text_field}' is {column_type}, expected a string column")


def _column_documents(path, batches, max_doc_bytes: int, what: str) -> Iterator[Document]:
    import pyarrow as pa

    source = source_of(path)
    row = 0
    try:
        for batch in batches:
            for text in batch.column(0).to_pylist():
                row += 1
                # Null text is an empty document: the `length` step drops and counts it.
                text = text or ""
                if len(text) * 4 > max_doc_bytes and len(text.encode("utf-8")) > max_doc_bytes:
                    raise _too_large(f"{path}: row {row}", len(text.encode("utf-8")), max_doc_bytes)
                yield text, source
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: corrupt {what} data after row {row} ({first_line(e)}); re-create the file") from None


def _too_large(where, size, limit: int) -> UserError:
    return UserError(f"{where}: document of {size} bytes exceeds max_doc_bytes ({limit}); split it or raise max_doc_bytes")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
