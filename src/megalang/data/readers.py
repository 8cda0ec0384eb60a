"""Documents from input files: finding the files (paths, folders, globs) and reading text, JSONL(.gz), Parquet.

Every reader streams (one document, one JSONL line or one Parquet batch at a time) and turns bad input into a
one-line `UserError` that names the file (and line) and says what to do.
"""

from __future__ import annotations

import fnmatch
import glob
import gzip
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megalang.errors import UserError

TEXT_EXTENSIONS = frozenset(
    ".txt .text .md .markdown .rst .adoc .tex .org "
    ".py .pyi .pyx .ipynb .c .h .cc .cpp .cxx .hpp .hh .cu .cuh .m .mm .java .kt .kts .scala .groovy .go .rs "
    ".swift .js .mjs .cjs .jsx .ts .tsx .vue .svelte .rb .php .pl .pm .lua .r .jl .hs .ml .mli .ex .exs .erl "
    ".clj .dart .cs .fs .vb .zig .nim .sh .bash .zsh .fish .ps1 .bat .sql .html .htm .xml .css .scss .less "
    ".toml .yaml .yml .ini .cfg .conf .proto .graphql .cmake .mk .dockerfile .gradle .csv .tsv".split()
)
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
_GLOB_CHARS = frozenset("*?[")
_PARQUET_BATCH_ROWS = 1024

Document = tuple[str, str]  # (text, source)
OnError = Callable[[UserError], None]


@dataclass
class InputFiles:
    files: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # unknown file types met while walking folders / globs


def file_format(path: Path) -> str | None:
    """'text', 'jsonl', 'parquet', or None for a file type megalang does not read."""
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if path.suffix.lower() in TEXT_EXTENSIONS:
        return "text"
    return None


def find_input_files(inputs: list[str], exclude: Sequence[str] = (), out: str | None = None) -> InputFiles:
    """Expand files, folders (recursively) and globs, in a deterministic order, each file once.

    A file named explicitly must be readable; files of unknown type found inside folders/globs are skipped.
    `out` (the stage's output folder) is never read, so re-running into a folder inside the input is safe.
    """
    found = InputFiles()
    seen: set[Path] = set()
    never = [str(Path(p).resolve()) for p in (out, f"{out}.tmp") if out]
    for item in inputs:
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
        files += [Path(dirpath, f) for f in filenames if not _excluded(os.path.join(dirpath, f), exclude)]
    return sorted(files)  # by path components: the order `ls -R | sort` would suggest, the same on every machine


def _excluded(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, p) for p in patterns)


# --- readers ----------------------------------------------------------------------------------------


def read_documents(
    path: str | os.PathLike, text_field: str = "text", max_doc_bytes: int = 64 << 20, on_error: OnError | None = None
) -> Iterator[Document]:
    """Yield (text, source) for every document in one file; `source` is the file's absolute path.

    Bad input raises UserError, except that with `on_error` set a bad JSONL line is reported to it and skipped.
    """
    path = Path(path)
    kind = file_format(path)
    if kind == "text":
        yield read_text_file(path, max_doc_bytes), str(path.resolve())
    elif kind == "jsonl":
        yield from read_jsonl(path, text_field, max_doc_bytes, on_error)
    elif kind == "parquet":
        yield from read_parquet(path, text_field, max_doc_bytes)
    else:
        raise UserError(f"{path}: unsupported file type; expected text, JSONL or Parquet")


def read_text_file(path: Path, max_doc_bytes: int) -> str:
    size = path.stat().st_size
    if size > max_doc_bytes:
        raise _too_large(path, size, max_doc_bytes)
    data = path.read_bytes()
    if (nul := data.find(b"\0")) >= 0:
        raise UserError(f"{path}: binary file (NUL byte at offset {nul}); remove it from the input or --exclude it")
    return decode_utf8(data, str(path)).removeprefix("\ufeff")


def decode_utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: invalid UTF-8 at byte offset {e.start}; convert the file to UTF-8 or exclude it") from None


def read_jsonl(path: Path, text_field: str, max_doc_bytes: int, on_error: OnError | None = None) -> Iterator[Document]:
    source = str(path.resolve())
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
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
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip ({e}); re-create or re-download the file") from None


def parse_jsonl_line(line: bytes, where: str, text_field: str) -> str:
    try:
        record = json.loads(decode_utf8(line, where))
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); fix or remove the line") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object with a '{text_field}' field, got {type(record).__name__}")
    if text_field not in record:
        keys = ", ".join(list(record)[:8]) or "none"
        raise UserError(f"{where}: no '{text_field}' field (keys: {keys}); pass --text-field with the right key")
    text = record[text_field]
    if not isinstance(text, str):
        raise UserError(f"{where}: field '{text_field}' is {type(text).__name__}, expected a string")
    return text


def read_parquet(path: Path, text_field: str, max_doc_bytes: int) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path.resolve())
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable Parquet file ({_first_line(e)}); re-create it") from None
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise UserError(f"{path}: no column '{text_field}' (columns: {', '.join(schema.names[:8])}); pass --text-field")
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UserError(f"{path}: column '{text_field}' is {column_type}, expected a string column")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                row += 1
                # Null text is an empty document: the `length` step drops and counts it.
                text = text or ""
                if len(text) * 4 > max_doc_bytes and len(text.encode("utf-8")) > max_doc_bytes:
                    raise _too_large(f"{path}: row {row}", len(text.encode("utf-8")), max_doc_bytes)
                yield text, source
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: corrupt Parquet data after row {row} ({_first_line(e)}); re-create the file") from None


def _too_large(where, size, limit: int) -> UserError:
    return UserError(f"{where}: document of {size} bytes exceeds max_doc_bytes ({limit}); split it or raise max_doc_bytes")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
