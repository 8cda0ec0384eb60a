"""Prepared documents: the Parquet folder `data prepare` writes and every later stage reads.

Columns `id` (64 bits of the SHA-256 of the text, hex), `text`, `source` (the file path or URL it came from), `kind`
(the source kind the quality filters and scrubbing used: web, books, code, chat, security) and the metadata
columns of structured sources (data/records.py: CVE and ATT&CK ids, CVSS, log host and time, language, ...; null for
plain text), in `docs-NNNNN.parquet` files listed by the folder's manifest.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.data.records import append_meta, arrow_fields, empty_columns
from megalang.errors import UserError, naming
from megalang.store.manifest import read_manifest

STAGE = "data.prepare"
DOC_FILE = "docs-{:05d}.parquet"
DIGEST_BYTES = 16  # of SHA-256, what exact dedup compares: ~50 bytes of Python per document in a set
_ID_BYTES = 8  # 64 bits of SHA-256 as the id: identical texts share an id, distinct ones practically never do


@dataclass
class Doc:
    text: str
    source: str
    kind: str = ""
    meta: dict[str, Any] | None = None  # structured sources' metadata (data/records.py META_COLUMNS)
    signature: np.ndarray | None = None  # MinHash, set by the near_dedup step


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:DIGEST_BYTES]


def id_of_digest(digest: bytes) -> str:
    return digest[:_ID_BYTES].hex()


def doc_id(text: str) -> str:
    return id_of_digest(text_digest(text))


# --- output -----------------------------------------------------------------------------------------


def doc_schema(with_id: bool):
    """The columns of a prepared folder (and, without `id`, of prepare's intermediate part files)."""
    import pyarrow as pa

    fields = [("id", pa.string())] if with_id else []
    fields += [("text", pa.large_string()), ("source", pa.string()), ("kind", pa.string())]
    return pa.schema([pa.field(*f) for f in fields] + arrow_fields())


class DocWriter:
    """Writes (id, text, source) rows to `docs-NNNNN.parquet`, one row group per buffered batch."""

    def __init__(self, root: Path, docs_per_file: int, batch_docs: int = 1024, batch_bytes: int = 16 << 20):
        self.root, self.docs_per_file = root, docs_per_file
        self.batch_docs, self.batch_bytes = batch_docs, batch_bytes
        self.files: list[str] = []
        self.documents = 0
        self.bytes = 0
        self.kinds: Counter = Counter()  # documents written per source kind
        self._rows: dict[str, list] = {"id": [], "text": [], "source": [], "kind": [], **empty_columns()}
        self._buffered_bytes = 0
        self._writer = None
        self._in_file = 0
        self._index = bytearray()  # per document: 8 bytes of id + 4 of source number (store/lineage.py)
        self._sources: dict[str, int] = {}

    def add(self, doc: Doc, nbytes: int) -> None:
        self._rows["id"].append(ident := doc_id(doc.text))
        self._index += bytes.fromhex(ident) + self._sources.setdefault(doc.source, len(self._sources)).to_bytes(4, "big")
        self._rows["text"].append(doc.text)
        self._rows["source"].append(doc.source)
        self._rows["kind"].append(doc.kind or None)
        self.kinds[doc.kind or "unknown"] += 1
        append_meta(self._rows, doc.meta)
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
                schema = doc_schema(with_id=True)
                self._writer = pq.ParquetWriter(self.root / self.files[-1], schema, compression="zstd")
            take = min(len(self._rows["id"]), self.docs_per_file - self._in_file)
            chunk = {k: v[:take] for k, v in self._rows.items()}
            self._rows = {k: v[take:] for k, v in self._rows.items()}
            with naming(self.root / self.files[-1]):  # a full disk is reported against this file
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

    def write_index(self) -> None:
        """`doc-index.bin` + `doc-sources.json` (store/lineage.py): every kept document's id and source, sorted by
        id, repeats (a mixture's copies) once, so `megalang lineage --find` answers without reading documents."""
        from megalang.store.lineage import RECORD, write_doc_index

        records = np.frombuffer(bytes(self._index), dtype=f"V{RECORD}")
        write_doc_index(self.root, np.unique(records).tobytes(), list(self._sources))


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
