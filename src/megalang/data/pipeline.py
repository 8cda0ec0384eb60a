"""`megalang data prepare`: raw files → document steps → `docs-NNNNN.parquet` + manifest, in two phases.

Map phase (parallel, one task per run of input files): normalise, length, quality filters, scrubbing,
decontamination and MinHash signatures, per document; survivors go to a part file, signatures to a .sig.npy
beside it. Corpus phase: exact duplicates (by digest, in this process), then near duplicates over every part at
once (in this process, or with executor=ray as Ray tasks partitioned by LSH bucket, data/dedup_partitioned.py);
then the parts are written out in input order. So the output is byte-identical whatever the executor and the
worker count. Also reads a prepared folder back.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import PrepareConfig
from megalang.data.documents import DIGEST_BYTES, STAGE, Doc, DocWriter, doc_schema, id_of_digest, text_digest
from megalang.data.quality import kind_resolver
from megalang.data.readers import InputFiles, find_input_files, input_size, is_url, open_raw
from megalang.data.records import append_meta, empty_columns, meta_of
from megalang.data.sources import source_matches
from megalang.data.steps import CORPUS_STEPS, SAMPLE_CHARS, StepRunner, StepStats, build_steps
from megalang.data.structured import nest_counts, read_docs
from megalang.errors import UserError, naming
from megalang.store.files import staging_dir
from megalang.store.manifest import describe_input, write_manifest

_MAX_LISTED_ERRORS = 1000


# --- the stage --------------------------------------------------------------------------------------


def prepare(cfg: PrepareConfig) -> dict[str, Any]:
    """Read every input, run the steps, write the surviving documents; return the manifest."""
    from megalang.data.executors import executor_session, resolve_workers, run_tasks

    found = find_input_files(cfg.inputs, cfg.exclude, out=cfg.out)
    if not found.files:
        raise UserError(f"{', '.join(cfg.inputs)}: no readable files (skipped {len(found.skipped)} of unknown type); "
                        "pass text, JSONL or Parquet files")
    build_steps(cfg)  # validate step names and their settings before any work starts
    tasks = plan_tasks(found.files, cfg.task_bytes)
    workers = resolve_workers(cfg.workers)
    with staging_dir(cfg.out, cfg.overwrite) as tmp, executor_session(cfg.executor, workers):
        parts = tmp / "_parts"
        parts.mkdir()
        work = functools.partial(map_task, cfg=cfg, parts=str(parts))
        results = list(run_tasks(work, tasks, cfg.executor, workers, cfg.progress,
                                 total_bytes=sum(t.nbytes for t in tasks)))
        merged = MergedResults(cfg, results)
        keep = corpus_dedup(cfg, merged, parts, workers)
        writer = DocWriter(tmp, cfg.docs_per_file)
        write_survivors(parts, results, keep, writer, merged)
        writer.close()
        writer.write_index()
        shutil.rmtree(parts)
        if writer.documents == 0:
            removed = ", ".join(f"{name}={st.documents_removed}" for name, st in merged.stats.items())
            raise UserError(f"empty corpus: no documents left after filtering ({merged.documents_in} read from "
                            f"{len(found.files)} files; removed {removed or 'none'}); check --input and --min-chars, "
                            "or narrow --steps (quality drops short and templated text by its kind's rules)")
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
    read: dict[str, int]  # the structured readers' counts (files per format, records, skipped by reason)


def part_path(parts: Path, index: int, suffix: str = ".parquet") -> Path:
    return Path(parts) / f"part-{index:06d}{suffix}"


def map_task(task: Task, cfg: PrepareConfig, parts: str) -> TaskResult:
    """Run the per-document steps over one task's files; write survivors (and their MinHash) to a part file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    steps = build_steps(cfg)
    runner = StepRunner(steps, cfg.rejected_samples)
    kind_of = kind_resolver(cfg.kinds, cfg.kind)
    errors: list[str] = []
    read_counts: Counter = Counter()
    digests, nbytes, has_sig, sigs = bytearray(), [], [], []
    rows = part_rows()
    schema = doc_schema(with_id=False)
    part = part_path(parts, task.index)
    with naming(part), pq.ParquetWriter(part, schema, compression="zstd", compression_level=1) as out:
        for path in task.files:
            for doc in read_file(path if is_url(path) else Path(path), cfg, errors, read_counts):
                doc.kind = kind_of(doc.source, doc.kind)
                doc, size = runner(doc)
                if doc is None:
                    continue
                rows["text"].append(doc.text)
                rows["source"].append(doc.source)
                rows["kind"].append(doc.kind)
                append_meta(rows, doc.meta)
                digests += text_digest(doc.text)
                nbytes.append(size)
                has_sig.append(doc.signature is not None)
                sigs.append(doc.signature)
                if len(rows["text"]) >= 1024:
                    out.write_table(pa.table(rows, schema=schema))
                    rows = part_rows()
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
        dict(read_counts),
    )


def part_rows() -> dict[str, list]:
    return {"text": [], "source": [], "kind": [], **empty_columns()}


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
        self.read: Counter = Counter()
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
            self.read.update(r.read)
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
        if self.read:
            out["structured"] = nest_counts(self.read)  # per format (feeds, logs, web archives): files, records, skips
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
        return id_of_digest(self.digests[index * DIGEST_BYTES : (index + 1) * DIGEST_BYTES])


def corpus_dedup(cfg: PrepareConfig, merged: MergedResults, parts: Path, workers: int = 1) -> Survivors:
    """Exact, then near-duplicate removal over every survivor of the map phase; first in corpus order wins.
    With executor=ray near-dedup runs as Ray tasks (data/dedup_partitioned.py), here otherwise; same result."""
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
            removed, first = near_duplicates(cfg, results, parts, keep, workers)
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
        d = digests[i * DIGEST_BYTES : (i + 1) * DIGEST_BYTES]
        j = seen.setdefault(d, i)
        if j != i:
            removed[i], first[i] = True, j
    return removed, first


def near_duplicates(cfg: PrepareConfig, results: list[TaskResult], parts: Path, alive: np.ndarray, workers: int):
    from megalang.data.dedup import MinHashParams, Signatures, near_duplicate_mask

    params = MinHashParams(**cfg.near_dedup.model_dump())
    valid = np.array([v for r in results for v in r.has_signature], dtype=bool) & alive
    files = [str(part_path(parts, r.index, ".sig.npy")) for r in results]
    if cfg.executor == "ray":
        from megalang.data.dedup_partitioned import near_duplicates_partitioned
        from megalang.data.executors import run_tasks

        def run(fn, tasks, phase):
            return run_tasks(fn, tasks, cfg.executor, workers, progress=False, phase=phase)

        return near_duplicates_partitioned(files, valid, params, parts / "near_dedup", run, workers)
    return near_duplicate_mask(Signatures([np.load(f, mmap_mode="r") for f in files], valid), params)


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
                        writer.add(Doc(row["text"], row["source"], row["kind"] or "", meta_of(row)), nbytes)
                else:
                    step, first = survivors.reason[g]
                    reason = "exact_duplicate" if step == "exact_dedup" else "near_duplicate"
                    merged.add_sample(step, {"reason": reason, "source": row["source"], "text": row["text"][:SAMPLE_CHARS],
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
        "documents_by_kind": dict(sorted(writer.kinds.items())),
        "bytes_in": merged.bytes_in,
        "bytes_out": writer.bytes,
        **{f"removed_{name}": st.documents_removed for name, st in merged.stats.items()},
        "steps": {name: asdict(st) for name, st in merged.stats.items()},
    }


def read_file(path: Path | str, cfg: PrepareConfig, errors: list[str], counts: Counter) -> Iterator[Doc]:
    """Documents of one file, read by content (data/structured.py); with errors="skip" a bad file (or record) is
    recorded in `errors` and skipped. `counts`: what the structured readers read and skipped, by reason."""
    if cfg.errors == "strict":
        yield from read_docs(path, cfg, None, counts)
        return
    try:
        yield from read_docs(path, cfg, lambda e: errors.append(str(e)), counts)
    except UserError as e:
        errors.append(str(e))
