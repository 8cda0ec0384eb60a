"""`megalang data prepare`: raw files → document steps (normalise, filter, dedup) → `docs-NNNNN.parquet` + manifest.

Also reads a prepared folder back (`iter_prepared`). New steps (quality filters, MinHash, scrubbing) register in STEPS.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from megalang.artifacts import describe_input, read_manifest, sha256_text, staging_dir, write_manifest
from megalang.config import PrepareConfig
from megalang.data.readers import InputFiles, find_input_files, read_documents
from megalang.errors import UserError

STAGE = "data.prepare"
DOC_FILE = "docs-{:05d}.parquet"
_ID_HEX = 16  # 64 bits of SHA-256: identical texts share an id, distinct ones practically never do
_MAX_LISTED_ERRORS = 1000


@dataclass
class Doc:
    text: str
    source: str


class Step(Protocol):
    """One document step: return the (possibly changed) document, or None to drop it.

    Steps run per document in config order and may keep state (dedup). The runner does the counting.
    """

    name: str

    def __call__(self, doc: Doc) -> Doc | None: ...


class Normalize:
    name = "normalize"

    def __init__(self, cfg: PrepareConfig):
        self.form = cfg.normalize

    def __call__(self, doc: Doc) -> Doc:
        text = doc.text if self.form == "none" else unicodedata.normalize(self.form, doc.text)
        doc.text = text.strip()
        return doc


class LengthFilter:
    name = "length"

    def __init__(self, cfg: PrepareConfig):
        self.min_chars = max(cfg.min_chars, 1)  # empty documents never survive, even with min_chars=0

    def __call__(self, doc: Doc) -> Doc | None:
        return doc if len(doc.text) >= self.min_chars else None


class ExactDedup:
    """First occurrence wins. Run it after `normalize` so that NFC/whitespace variants count as duplicates."""

    name = "exact_dedup"

    def __init__(self, cfg: PrepareConfig):
        # 16 bytes of SHA-256 per document: ~50 bytes of Python per entry, 10M documents in ~0.5 GB.
        self.seen: set[bytes] = set()

    def __call__(self, doc: Doc) -> Doc | None:
        digest = hashlib.sha256(doc.text.encode("utf-8")).digest()[:16]
        if digest in self.seen:
            return None
        self.seen.add(digest)
        return doc


STEPS: dict[str, Callable[[PrepareConfig], Step]] = {
    "normalize": Normalize,
    "length": LengthFilter,
    "exact_dedup": ExactDedup,
}


def build_steps(cfg: PrepareConfig) -> list[Step]:
    unknown = [s for s in cfg.steps if s not in STEPS]
    if unknown:
        raise UserError(f"steps: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    return [STEPS[name](cfg) for name in cfg.steps]


@dataclass
class StepStats:
    documents_in: int = 0
    documents_removed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class StepRunner:
    """Applies the steps in order to each document and counts documents and UTF-8 bytes in/out per step."""

    def __init__(self, steps: list[Step]):
        self.steps = steps
        self.stats = {step.name: StepStats() for step in steps}
        self.documents_in = self.bytes_in = 0

    def __call__(self, doc: Doc) -> tuple[Doc | None, int]:
        """The surviving document (or None) and its UTF-8 size."""
        nbytes = len(doc.text.encode("utf-8"))
        self.documents_in += 1
        self.bytes_in += nbytes
        for step in self.steps:
            st = self.stats[step.name]
            st.documents_in += 1
            st.bytes_in += nbytes
            before = doc.text
            doc = step(doc)
            if doc is None:
                st.documents_removed += 1
                return None, 0
            if doc.text is not before:  # re-measure only when a step changed the text
                nbytes = len(doc.text.encode("utf-8"))
            st.bytes_out += nbytes
        return doc, nbytes


# --- output -----------------------------------------------------------------------------------------


class DocWriter:
    """Writes (id, text, source) rows to `docs-NNNNN.parquet`, one row group per buffered batch."""

    def __init__(self, root: Path, docs_per_file: int, batch_docs: int = 1024, batch_bytes: int = 16 << 20):
        self.root, self.docs_per_file = root, docs_per_file
        self.batch_docs, self.batch_bytes = batch_docs, batch_bytes
        self.files: list[str] = []
        self.documents = 0
        self.bytes = 0
        self._rows: dict[str, list[str]] = {"id": [], "text": [], "source": []}
        self._buffered_bytes = 0
        self._writer = None
        self._in_file = 0

    def add(self, doc: Doc, nbytes: int) -> None:
        self._rows["id"].append(sha256_text(doc.text)[:_ID_HEX])
        self._rows["text"].append(doc.text)
        self._rows["source"].append(doc.source)
        self._buffered_bytes += nbytes
        self.documents += 1
        self.bytes += nbytes
        if len(self._rows["id"]) >= self.batch_docs or self._buffered_bytes >= self.batch_bytes:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        while self._rows["id"]:
            if self._writer is None:
                self.files.append(DOC_FILE.format(len(self.files)))
                schema = pa.schema([("id", pa.string()), ("text", pa.large_string()), ("source", pa.string())])
                self._writer = pq.ParquetWriter(self.root / self.files[-1], schema, compression="zstd")
            take = min(len(self._rows["id"]), self.docs_per_file - self._in_file)
            chunk = {k: v[:take] for k, v in self._rows.items()}
            self._rows = {k: v[take:] for k, v in self._rows.items()}
            self._writer.write_table(pa.table(chunk, schema=self._writer.schema))
            self._in_file += take
            if self._in_file >= self.docs_per_file:
                self._close_file()
        self._buffered_bytes = 0

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer, self._in_file = None, 0

    def close(self) -> list[str]:
        self._flush()
        self._close_file()
        return list(self.files)


# --- the stage --------------------------------------------------------------------------------------


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Read every input, run the steps, write the surviving documents; return the manifest."""
    found = find_input_files(cfg.inputs, cfg.exclude, out=cfg.out)
    if not found.files:
        raise UserError(f"{', '.join(cfg.inputs)}: no readable files (skipped {len(found.skipped)} of unknown type); "
                        "pass text, JSONL or Parquet files")
    runner = StepRunner(build_steps(cfg))
    errors: list[str] = []
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        writer = DocWriter(tmp, cfg.docs_per_file)
        for path in found.files:
            for text, source in read_file(path, cfg, errors):
                doc, nbytes = runner(Doc(text, source))
                if doc is not None:
                    writer.add(doc, nbytes)
        writer.close()
        if writer.documents == 0:
            removed = ", ".join(f"{name}={st.documents_removed}" for name, st in runner.stats.items())
            raise UserError(f"empty corpus: no documents left after filtering ({runner.documents_in} read from "
                            f"{len(found.files)} files; removed {removed or 'none'}); check --input and --min-chars")
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(), inputs=[describe_input(f) for f in found.files],
            counts=prepare_counts(found, errors, runner, writer), errors=errors[:_MAX_LISTED_ERRORS],
        )


def prepare_counts(found: InputFiles, errors: list[str], runner: StepRunner, writer: DocWriter) -> dict[str, Any]:
    return {
        "files": len(found.files),
        "files_skipped": len(found.skipped),
        "errors_skipped": len(errors),
        "documents_in": runner.documents_in,
        "documents_out": writer.documents,
        "bytes_in": runner.bytes_in,
        "bytes_out": writer.bytes,
        **{f"removed_{name}": st.documents_removed for name, st in runner.stats.items()},
        "steps": {name: asdict(st) for name, st in runner.stats.items()},
    }


def read_file(path: Path, cfg: PrepareConfig, errors: list[str]) -> Iterator[tuple[str, str]]:
    """Documents of one file; with errors="skip" a bad file (or JSONL line) is recorded in `errors` and skipped."""
    if cfg.errors == "strict":
        yield from read_documents(path, cfg.text_field, cfg.max_doc_bytes)
        return
    try:
        yield from read_documents(path, cfg.text_field, cfg.max_doc_bytes, on_error=lambda e: errors.append(str(e)))
    except UserError as e:
        errors.append(str(e))


# --- reading a prepared folder ----------------------------------------------------------------------


def read_prepared_manifest(root: str | Path) -> dict[str, Any]:
    return read_manifest(root, STAGE, "prepared documents", "megalang data prepare")


def iter_prepared(root: str | Path, columns: tuple[str, ...] = ("id", "text", "source"), batch_rows: int = 1024) -> Iterator[dict]:
    """Stream rows back from a prepared folder, in the order they were written, one batch in memory at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    manifest = read_prepared_manifest(root)
    for name in sorted(n for n in manifest["files"] if n.startswith("docs-") and n.endswith(".parquet")):
        path = root / name
        if not path.is_file():
            raise UserError(f"{path}: missing; the prepared folder is incomplete, re-run `megalang data prepare`")
        try:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=list(columns)):
                yield from batch.to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"{path}: unreadable ({str(e).splitlines()[0]}); run `megalang verify {root}`") from None
