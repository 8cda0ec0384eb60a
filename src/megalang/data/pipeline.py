"""`megalang data prepare`: raw files → document steps → `docs-NNNNN.parquet` + manifest, in two phases.

Map phase (parallel, one task per run of input files): normalise, length, quality filters, scrubbing,
decontamination and MinHash signatures, per document; survivors go to a part file. Corpus phase (one process):
exact and near-duplicate removal over every part at once, then the parts are written out in input order. So the
output is byte-identical whatever the executor and the worker count. Also reads a prepared folder back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from megalang.artifacts import describe_input, read_manifest, staging_dir, write_manifest
from megalang.config import PrepareConfig
from megalang.data.readers import InputFiles, find_input_files, input_size, is_url, open_raw, read_documents
from megalang.errors import UserError, naming

STAGE = "data.prepare"
DOC_FILE = "docs-{:05d}.parquet"
_ID_HEX = 16  # 64 bits of SHA-256: identical texts share an id, distinct ones practically never do
_DIGEST_BYTES = 16
_MAX_LISTED_ERRORS = 1000
_SAMPLE_CHARS = 4000  # text kept per rejected sample


@dataclass
class Doc:
    text: str
    source: str
    kind: str = ""
    signature: np.ndarray | None = None  # MinHash, set by the near_dedup step


class Step(Protocol):
    """One document step: return the (possibly changed) document, None to drop it, or a string to drop it
    with that reason ("short_doc"). Steps run per document in config order; the runner does the counting."""

    name: str

    def __call__(self, doc: Doc) -> Doc | str | None: ...


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
    """First occurrence wins. Run it after `normalize` so that NFC/whitespace variants count as duplicates.

    `prepare` does the same over the whole corpus in its corpus phase (`exact_duplicates`); this per-document
    form serves a single sequential stream.
    """

    name = "exact_dedup"

    def __init__(self, cfg: PrepareConfig):
        # 16 bytes of SHA-256 per document: ~50 bytes of Python per entry, 10M documents in ~0.5 GB.
        self.seen: set[bytes] = set()

    def __call__(self, doc: Doc) -> Doc | None:
        digest = text_digest(doc.text)
        if digest in self.seen:
            return None
        self.seen.add(digest)
        return doc


class Quality:
    """Gopher / C4 / FineWeb / entropy filters, chosen per source kind (see data/quality.py)."""

    name = "quality"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.quality import KindFilters, infer_kind

        self.filters = KindFilters.from_config(cfg.quality_filters, cfg.quality_params)
        self.kind_of = functools.lru_cache(maxsize=65536)(
            functools.partial(infer_kind, overrides=cfg.kinds, default=cfg.kind)
        )

    def __call__(self, doc: Doc) -> Doc | str:
        doc.kind = doc.kind or self.kind_of(doc.source)
        text, reason = self.filters.apply(doc.text, doc.kind)
        if text is None:
            return reason
        doc.text = text
        return doc


class Scrub:
    """Replaces PII and secrets with typed placeholders; the replacements are counted per kind."""

    name = "scrub"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data import scrub

        unknown = sorted(set(cfg.scrub or ()) - set(scrub.KINDS))
        if unknown:
            raise UserError(f"scrub: unknown kind(s) {', '.join(unknown)}; known: {', '.join(scrub.KINDS)}")
        self.kinds = tuple(cfg.scrub) if cfg.scrub is not None else None
        self.replaced: Counter = Counter()
        self._scrub = scrub.scrub

    def __call__(self, doc: Doc) -> Doc:
        text, counts = self._scrub(doc.text, self.kinds)
        if counts:
            doc.text = text
            self.replaced.update(counts)
        return doc


class Decontaminate:
    """Drops (or flags) documents sharing a word n-gram with the eval files in `decontaminate`."""

    name = "decontaminate"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.decontaminate import load_contamination

        if not cfg.decontaminate:
            raise UserError("steps: 'decontaminate' needs eval files; set decontaminate=[PATH, ...] (--decontaminate)")
        self.index = load_contamination(tuple(cfg.decontaminate), cfg.text_field, cfg.decontaminate_ngram, cfg.max_doc_bytes)
        self.mode = cfg.decontaminate_mode
        self.flagged: list[dict[str, Any]] = []
        self.flagged_count = 0

    def __call__(self, doc: Doc) -> Doc | str:
        hits = self.index.matches(doc.text)
        if not hits:
            return doc
        if self.mode == "drop":
            return "eval_overlap"
        self.flagged_count += 1
        self.flagged.append({"source": doc.source, "id": doc_id(doc.text), "ngrams": hits})
        return doc


class NearDedupSignature:
    """The per-document half of `near_dedup`: the MinHash signature; clustering happens in the corpus phase."""

    name = "near_dedup"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.dedup import MinHasher, MinHashParams

        self.hasher = MinHasher(MinHashParams(**cfg.near_dedup.model_dump()))

    def __call__(self, doc: Doc) -> Doc:
        doc.signature = self.hasher.signature(doc.text)
        return doc


class ModelFilter:
    """Drops documents a trained classifier scores at or above `classifier_threshold` (see data/classifier.py)."""

    name = "classifier"

    def __init__(self, cfg: PrepareConfig):
        from megalang.data.classifier import Classifier

        if not cfg.classifier:
            raise UserError("steps: 'classifier' needs a trained classifier; set classifier=FOLDER "
                            "(from `megalang data classifier train`)")
        self.model = Classifier(cfg.classifier)
        self.threshold = cfg.classifier_threshold

    def __call__(self, doc: Doc) -> Doc | str:
        return "classifier_reject" if self.model.reject_probability([doc.text])[0] >= self.threshold else doc


STEPS: dict[str, Callable[[PrepareConfig], Step]] = {
    "normalize": Normalize,
    "length": LengthFilter,
    "exact_dedup": ExactDedup,
    "quality": Quality,
    "scrub": Scrub,
    "decontaminate": Decontaminate,
    "near_dedup": NearDedupSignature,
    "classifier": ModelFilter,
}
CORPUS_STEPS = ("exact_dedup", "near_dedup")  # decided over the whole corpus, after every map step


def build_steps(cfg: PrepareConfig) -> list[Step]:
    unknown = [s for s in cfg.steps if s not in STEPS]
    if unknown:
        raise UserError(f"steps: unknown step(s) {', '.join(unknown)}; known: {', '.join(STEPS)}")
    if len(set(cfg.steps)) != len(cfg.steps):
        raise UserError(f"steps: each step may appear once ({', '.join(cfg.steps)})")
    if cfg.decontaminate and "decontaminate" not in cfg.steps:
        raise UserError("decontaminate: eval files are set but 'decontaminate' is not in steps; add it to steps")
    return [STEPS[name](cfg) for name in cfg.steps]


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:_DIGEST_BYTES]


def doc_id(text: str) -> str:
    return text_digest(text).hex()[:_ID_HEX]


@dataclass
class StepStats:
    documents_in: int = 0
    documents_removed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reasons: dict[str, list[int]] = field(default_factory=dict)  # reason → [documents, bytes] removed

    def drop(self, reason: str | None, nbytes: int) -> None:
        self.documents_removed += 1
        if reason:
            counts = self.reasons.setdefault(reason, [0, 0])
            counts[0] += 1
            counts[1] += nbytes

    def merge(self, other: StepStats) -> None:
        self.documents_in += other.documents_in
        self.documents_removed += other.documents_removed
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        for reason, (docs, nbytes) in other.reasons.items():
            counts = self.reasons.setdefault(reason, [0, 0])
            counts[0] += docs
            counts[1] += nbytes


class StepRunner:
    """Applies the steps in order to each document and counts documents and UTF-8 bytes in/out per step.

    Keeps the first `samples` rejected documents per step and reason (for `rejected/`).
    """

    def __init__(self, steps: list[Step], samples: int = 0):
        self.steps = steps
        self.stats = {step.name: StepStats() for step in steps}
        self.documents_in = self.bytes_in = 0
        self.samples = samples
        self.rejected: dict[str, list[dict[str, Any]]] = {}
        self._sampled: Counter = Counter()

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
            result = step(doc)
            if result is None or isinstance(result, str):
                st.drop(result, nbytes)
                self.sample(step.name, result or "dropped", doc)
                return None, 0
            doc = result
            if doc.text is not before:  # re-measure only when a step changed the text
                nbytes = len(doc.text.encode("utf-8"))
            st.bytes_out += nbytes
        return doc, nbytes

    def sample(self, step: str, reason: str, doc: Doc, **extra: Any) -> None:
        key = (step, reason)
        if self._sampled[key] < self.samples:
            self._sampled[key] += 1
            self.rejected.setdefault(step, []).append(
                {"reason": reason, "source": doc.source, "text": doc.text[:_SAMPLE_CHARS], **extra}
            )


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
        self._rows["id"].append(doc_id(doc.text))
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


# --- the stage --------------------------------------------------------------------------------------


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Read every input, run the steps, write the surviving documents; return the manifest."""
    from megalang.data.executors import resolve_workers, run_tasks

    found = find_input_files(cfg.inputs, cfg.exclude, out=cfg.out)
    if not found.files:
        raise UserError(f"{', '.join(cfg.inputs)}: no readable files (skipped {len(found.skipped)} of unknown type); "
                        "pass text, JSONL or Parquet files")
    build_steps(cfg)  # validate step names and their settings before any work starts
    tasks = plan_tasks(found.files, cfg.task_bytes)
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        parts = tmp / "_parts"
        parts.mkdir()
        work = functools.partial(map_task, cfg=cfg, parts=str(parts))
        results = list(run_tasks(work, tasks, cfg.executor, resolve_workers(cfg.workers), cfg.progress,
                                 total_bytes=sum(t.nbytes for t in tasks)))
        merged = MergedResults(cfg, results)
        keep = corpus_dedup(cfg, merged, parts)
        writer = DocWriter(tmp, cfg.docs_per_file)
        write_survivors(parts, results, keep, writer, merged)
        writer.close()
        shutil.rmtree(parts)
        if writer.documents == 0:
            removed = ", ".join(f"{name}={st.documents_removed}" for name, st in merged.stats.items())
            raise UserError(f"empty corpus: no documents left after filtering ({merged.documents_in} read from "
                            f"{len(found.files)} files; removed {removed or 'none'}); check --input and --min-chars")
        write_rejected(tmp, merged.rejected)
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(), inputs=[describe_source(f) for f in found.files],
            counts=prepare_counts(found, merged, writer), errors=merged.errors[:_MAX_LISTED_ERRORS],
            **merged.extra(),
        )


@dataclass
class Task:
    index: int
    files: list[str]
    nbytes: int


def describe_source(path: Path | str) -> dict[str, Any]:
    """How the manifest names one raw input; remote files are hashed while streaming them once more."""
    if not is_url(str(path)):
        return describe_input(path)
    h, size = hashlib.sha256(), 0
    with open_raw(str(path)) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"path": str(path), "kind": "raw", "size": size, "sha256": h.hexdigest()}


def plan_tasks(files: list[Path | str], task_bytes: int, max_files: int = 512) -> list[Task]:
    """Consecutive runs of input files of about `task_bytes` each. Depends only on the inputs (never on the
    worker count), which is what keeps the output identical however many workers run the tasks."""
    tasks: list[Task] = []
    group: list[str] = []
    size = 0
    for path in files:
        group.append(str(path))
        size += input_size(path)
        if size >= task_bytes or len(group) >= max_files:
            tasks.append(Task(len(tasks), group, size))
            group, size = [], 0
    if group:
        tasks.append(Task(len(tasks), group, size))
    return tasks


@dataclass
class TaskResult:
    index: int
    documents_in: int
    bytes_in: int
    documents: int  # survivors written to the part file
    digests: bytes  # 16 bytes of SHA-256 per survivor, in order
    nbytes: list[int]  # UTF-8 size per survivor
    has_signature: list[bool]
    stats: dict[str, StepStats]
    rejected: dict[str, list[dict[str, Any]]]
    errors: list[str]
    replaced: dict[str, int]
    flagged: list[dict[str, Any]]
    flagged_count: int


def part_path(parts: Path, index: int, suffix: str = ".parquet") -> Path:
    return Path(parts) / f"part-{index:06d}{suffix}"


def map_task(task: Task, cfg: PrepareConfig, parts: str) -> TaskResult:
    """Run the per-document steps over one task's files; write survivors (and their MinHash) to a part file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    steps = [s for s in build_steps(cfg) if s.name != "exact_dedup"]
    runner = StepRunner(steps, cfg.rejected_samples)
    errors: list[str] = []
    digests, nbytes, has_sig, sigs = bytearray(), [], [], []
    rows: dict[str, list[str]] = {"text": [], "source": []}
    schema = pa.schema([("text", pa.large_string()), ("source", pa.string())])
    part = part_path(parts, task.index)
    with naming(part), pq.ParquetWriter(part, schema, compression="zstd", compression_level=1) as out:
        for path in task.files:
            for text, source in read_file(path if is_url(path) else Path(path), cfg, errors):
                doc, size = runner(Doc(text, source))
                if doc is None:
                    continue
                rows["text"].append(doc.text)
                rows["source"].append(doc.source)
                digests += text_digest(doc.text)
                nbytes.append(size)
                has_sig.append(doc.signature is not None)
                sigs.append(doc.signature)
                if len(rows["text"]) >= 1024:
                    out.write_table(pa.table(rows, schema=schema))
                    rows = {"text": [], "source": []}
        if rows["text"]:
            out.write_table(pa.table(rows, schema=schema))
    if "near_dedup" in cfg.steps:
        np.save(part_path(parts, task.index, ".sig.npy"), stack_signatures(sigs, cfg.near_dedup.bands * cfg.near_dedup.rows))
    named = {s.name: s for s in steps}
    scrub, decon = named.get("scrub"), named.get("decontaminate")
    return TaskResult(
        task.index, runner.documents_in, runner.bytes_in, len(nbytes), bytes(digests), nbytes, has_sig,
        runner.stats, runner.rejected, errors, dict(scrub.replaced) if scrub else {},
        decon.flagged[: cfg.rejected_samples] if decon else [], decon.flagged_count if decon else 0,
    )


def stack_signatures(sigs: list[np.ndarray | None], num_perm: int) -> np.ndarray:
    out = np.full((len(sigs), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    for i, sig in enumerate(sigs):
        if sig is not None:
            out[i] = sig
    return out


class Mixture:
    """Up/down-sampling by source: weight w writes a document floor(w) times, plus once more with probability
    frac(w) decided by a hash of its id — deterministic, and a document's copies never straddle a split."""

    def __init__(self, weights: dict[str, float]):
        bad = [f"{p}={w}" for p, w in weights.items() if w < 0]
        if bad:
            raise UserError(f"mixture: weights must be >= 0 ({', '.join(bad)})")
        self.weights = dict(weights)
        self.match = functools.lru_cache(maxsize=65536)(self._match)
        self.stats = {p: {"weight": w, "documents_in": 0, "documents_out": 0, "bytes_out": 0} for p, w in weights.items()}

    def _match(self, source: str) -> str | None:
        from megalang.data.tokenize import source_matches  # the glob rule `val_sources` uses too

        return next((p for p in self.weights if source_matches(source, p)), None)

    def copies(self, source: str, doc_id: str, nbytes: int) -> int:
        pattern = self.match(source) if self.weights else None
        if pattern is None:
            return 1
        weight = self.weights[pattern]
        whole, frac = int(weight), weight - int(weight)
        draw = int.from_bytes(hashlib.sha256(f"megalang-mix:{doc_id}".encode()).digest()[:8], "big") / 2**64
        n = whole + (draw < frac)
        st = self.stats[pattern]
        st["documents_in"] += 1
        st["documents_out"] += n
        st["bytes_out"] += n * nbytes
        return n


class MergedResults:
    """The tasks' results combined in task order (so counts, samples and errors never depend on scheduling)."""

    def __init__(self, cfg: PrepareConfig, results: list[TaskResult]):
        self.cfg = cfg
        self.results = results
        self.documents_in = sum(r.documents_in for r in results)
        self.bytes_in = sum(r.bytes_in for r in results)
        self.stats = {name: StepStats() for name in cfg.steps}
        self.rejected: dict[str, list[dict[str, Any]]] = {}
        self.errors = [e for r in results for e in r.errors]
        self.replaced: Counter = Counter()
        self.flagged = [f for r in results for f in r.flagged][: cfg.rejected_samples]
        self.flagged_count = sum(r.flagged_count for r in results)
        sampled: Counter = Counter()
        for r in results:
            for name, st in r.stats.items():
                self.stats[name].merge(st)
            for name, samples in r.rejected.items():
                for sample in samples:
                    self.add_sample(name, sample, sampled)
            self.replaced.update(r.replaced)
        self._sampled = sampled
        self.mixture = Mixture(cfg.mixture)

    def add_sample(self, step: str, sample: dict[str, Any], sampled: Counter | None = None) -> None:
        sampled = self._sampled if sampled is None else sampled
        key = (step, sample["reason"])
        if sampled[key] < self.cfg.rejected_samples:
            sampled[key] += 1
            self.rejected.setdefault(step, []).append(sample)

    def extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.cfg.mixture:
            out["mixture"] = self.mixture.stats
        if "scrub" in self.cfg.steps:
            out["scrubbed"] = dict(sorted(self.replaced.items()))
        if "decontaminate" in self.cfg.steps:
            out["decontamination"] = {"mode": self.cfg.decontaminate_mode, "flagged": self.flagged_count,
                                      "flagged_examples": self.flagged}
        return out


@dataclass
class Survivors:
    """Per map-phase survivor (global corpus order): kept or not, and the document it duplicates."""

    keep: np.ndarray
    reason: list[tuple[str, int] | None]
    digests: bytes  # 16 bytes of SHA-256 each; the first 8, in hex, are the document id

    def doc_id(self, index: int) -> str:
        return self.digests[index * _DIGEST_BYTES : index * _DIGEST_BYTES + _ID_HEX // 2].hex()


def corpus_dedup(cfg: PrepareConfig, merged: MergedResults, parts: Path) -> Survivors:
    """Exact, then near-duplicate removal over every survivor of the map phase; first in corpus order wins."""
    results = merged.results
    nbytes = np.array([n for r in results for n in r.nbytes], dtype=np.int64)
    n = len(nbytes)
    keep = np.ones(n, dtype=bool)
    why: list[tuple[str, int] | None] = [None] * n
    digests = b"".join(r.digests for r in results)
    for name in cfg.steps:
        if name not in CORPUS_STEPS:
            continue
        st = merged.stats[name]
        st.documents_in, st.bytes_in = int(keep.sum()), int(nbytes[keep].sum())
        if name == "exact_dedup":
            removed, first = exact_duplicates(digests, keep)
        else:
            removed, first = near_duplicates(cfg, results, parts, keep)
        for i in np.flatnonzero(removed).tolist():
            st.drop("exact_duplicate" if name == "exact_dedup" else "near_duplicate", int(nbytes[i]))
            why[i] = (name, int(first[i]))
        keep &= ~removed
        st.bytes_out = int(nbytes[keep].sum())
    return Survivors(keep, why, digests)


def exact_duplicates(digests: bytes, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    removed = np.zeros(len(alive), dtype=bool)
    first = np.arange(len(alive))
    seen: dict[bytes, int] = {}
    for i in np.flatnonzero(alive).tolist():
        d = digests[i * _DIGEST_BYTES : (i + 1) * _DIGEST_BYTES]
        j = seen.setdefault(d, i)
        if j != i:
            removed[i], first[i] = True, j
    return removed, first


def near_duplicates(cfg: PrepareConfig, results: list[TaskResult], parts: Path, alive: np.ndarray):
    from megalang.data.dedup import MinHashParams, Signatures, near_duplicate_mask

    arrays = [np.load(part_path(parts, r.index, ".sig.npy"), mmap_mode="r") for r in results]
    valid = np.array([v for r in results for v in r.has_signature], dtype=bool) & alive
    return near_duplicate_mask(Signatures(arrays, valid), MinHashParams(**cfg.near_dedup.model_dump()))


def write_survivors(parts: Path, results: list[TaskResult], survivors: Survivors, writer: DocWriter,
                    merged: MergedResults) -> None:
    """Copy the kept documents from the part files into the output, in input order; sample the duplicates."""
    import pyarrow.parquet as pq

    g = 0
    for r in results:
        for batch in pq.ParquetFile(part_path(parts, r.index)).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if survivors.keep[g]:
                    nbytes = len(row["text"].encode("utf-8"))
                    for _ in range(merged.mixture.copies(row["source"], survivors.doc_id(g), nbytes)):
                        writer.add(Doc(row["text"], row["source"]), nbytes)
                else:
                    step, first = survivors.reason[g]
                    reason = "exact_duplicate" if step == "exact_dedup" else "near_duplicate"
                    merged.add_sample(step, {"reason": reason, "source": row["source"], "text": row["text"][:_SAMPLE_CHARS],
                                             "duplicate_of": survivors.doc_id(first)})
                g += 1


def write_rejected(root: Path, rejected: dict[str, list[dict[str, Any]]]) -> None:
    """`rejected/STEP.jsonl`: the sampled rejected documents of each step, with the reason."""
    if not rejected:
        return
    (root / "rejected").mkdir()
    for step, samples in rejected.items():
        with open(root / "rejected" / f"{step}.jsonl", "w", encoding="utf-8") as f:
            for sample in samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")


def prepare_counts(found: InputFiles, merged: MergedResults, writer: DocWriter) -> dict[str, Any]:
    return {
        "files": len(found.files),
        "files_skipped": len(found.skipped),
        "errors_skipped": len(merged.errors),
        "documents_in": merged.documents_in,
        "documents_out": writer.documents,
        "bytes_in": merged.bytes_in,
        "bytes_out": writer.bytes,
        **{f"removed_{name}": st.documents_removed for name, st in merged.stats.items()},
        "steps": {name: asdict(st) for name, st in merged.stats.items()},
    }


def read_file(path: Path | str, cfg: PrepareConfig, errors: list[str]) -> Iterator[tuple[str, str]]:
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
