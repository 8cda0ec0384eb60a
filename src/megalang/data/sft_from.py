"""`megalang data sft-from`: a prepared folder's CVE and ATT&CK technique documents → chat JSONL for `data.sft`
(train.jsonl, val.jsonl, manifest.json), the questions and answers from data/security_qa.py, held out by record.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from megalang.config import SftFromConfig
from megalang.data.documents import iter_prepared, read_prepared_manifest
from megalang.data.security_qa import QA, QUESTION_TYPES, questions_for, record_key, record_kind
from megalang.errors import UserError, naming
from megalang.store.files import staging_dir
from megalang.store.manifest import describe_input, write_manifest

STAGE = "data.sft_from"
SPLIT_FILES = {"train": "train.jsonl", "val": "val.jsonl"}
_COLUMNS = ("id", "format", "record_id", "cve_id", "cwe_ids", "cvss_score", "cvss_vector", "attack_id", "tactics",
            "platforms", "fields")
_COUNT_OF_KIND = {"cve": "documents_cve", "technique": "documents_technique", "attack_other": "ignored_attack_other",
                  "other": "ignored_other"}
_HOW_TO_GET = "run `megalang data prepare -i FEEDS` on NVD/CVE 5 feeds or an ATT&CK STIX bundle"


def sft_from(cfg: SftFromConfig) -> dict[str, Any]:
    """Write train.jsonl and val.jsonl (one chat per line, with `record_id` and `question`) and the manifest."""
    check_paths(cfg)
    wanted = tuple(q for q in QUESTION_TYPES if q in cfg.questions)
    val_keys = choose_val(cfg, wanted)
    counts: Counter = Counter()
    by_type: Counter = Counter()
    skipped: Counter = Counter()
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        paths = {split: tmp / name for split, name in SPLIT_FILES.items()}
        files = {split: path.open("w", encoding="utf-8", newline="\n") for split, path in paths.items()}
        try:
            seen: set[bytes] = set()
            records: dict[str, set[str]] = {"train": set(), "val": set()}
            for row, qas, missing in generate(cfg.input, wanted, cfg.seed, counts):
                skipped.update(missing)
                key = record_key(row)
                split = "val" if key in val_keys else "train"
                for qa in qas:
                    line = chat_line(qa, key)
                    digest = hashlib.sha256(line.encode()).digest()[:16]
                    if digest in seen:  # the NVD and CVE 5 copies of one CVE ask the same question
                        skipped["duplicate"] += 1
                        continue
                    seen.add(digest)
                    _write(files[split], paths[split], line)
                    by_type[qa.question] += 1
                    counts[f"{split}_rows"] += 1
                    records[split].add(key)
        finally:
            for f in files.values():
                f.close()
        if not by_type:
            raise UserError(f"{cfg.input}: none of its CVE and technique documents has the fields the chosen "
                            f"questions ({', '.join(wanted)}) need; choose others with --questions")
        counts.update({f"{split}_records": len(keys) for split, keys in records.items()})
        counts["records"] = counts["train_records"] + counts["val_records"]
        return write_manifest(tmp, STAGE, config=cfg.model_dump(), inputs=[describe_input(cfg.input)],
                              counts=_ordered_counts(counts, by_type, skipped, wanted))


def check_paths(cfg: SftFromConfig) -> None:
    """The input is a prepared folder with the metadata columns; the output is neither inside it nor around it."""
    read_prepared_manifest(cfg.input)
    source, out = Path(cfg.input).resolve(), Path(cfg.out).resolve()
    if out.is_relative_to(source) or source.is_relative_to(out):
        raise UserError(f"--out {cfg.out}: inside (or containing) the input folder {cfg.input}; write the "
                        "instructions elsewhere, e.g. next to it")
    check_columns(Path(cfg.input))


def check_columns(root: Path) -> None:
    import pyarrow.parquet as pq

    for path in sorted(root.glob("docs-*.parquet"))[:1]:
        with naming(path):
            names = set(pq.read_schema(path).names)
        if missing := [c for c in _COLUMNS if c not in names]:
            raise UserError(f"{root}: prepared without the structured-record columns ({', '.join(missing)}); "
                            f"re-run `megalang data prepare` with this megalang version ({_HOW_TO_GET})")


def generate(root: str, wanted: tuple[str, ...], seed: int,
             counts: Counter) -> Iterator[tuple[dict[str, Any], list[QA], list[str]]]:
    """(row, its questions, reasons questions were skipped) per CVE or technique document, in prepared order;
    `counts` gets documents, documents_cve, documents_technique and the documents left aside by kind."""
    for row in iter_prepared(root, columns=_COLUMNS):
        counts["documents"] += 1
        qas, missing = questions_for(row, wanted, seed)
        counts[_COUNT_OF_KIND[record_kind(row)]] += 1
        if qas or missing:
            yield row, qas, missing
    if not counts["documents_cve"] + counts["documents_technique"]:
        raise UserError(f"{root}: no CVE or ATT&CK technique documents among its {counts['documents']} documents; "
                        f"{_HOW_TO_GET}, then pass that folder")


def choose_val(cfg: SftFromConfig, wanted: tuple[str, ...]) -> set[str]:
    """The record keys held out: those whose hash falls under val_fraction. All of a record's questions go to the
    same side, so no CVE is on both; when the hash picks none of several records, the lowest hash is held out."""
    if cfg.val_fraction <= 0:
        return set()
    threshold = int(cfg.val_fraction * 2**64)
    hashes = {key: split_hash(key, cfg.seed) for key in {record_key(row) for row, qas, _ in
                                                          generate(cfg.input, wanted, cfg.seed, Counter()) if qas}}
    val = {key for key, h in hashes.items() if h < threshold}
    if not val and len(hashes) >= 2:
        val = {min(hashes, key=lambda k: (hashes[k], k))}
    return val


def split_hash(key: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"megalang-sft-from-val:{seed}:{key}".encode()).digest()[:8], "big")


def chat_line(qa: QA, key: str) -> str:
    row = {"messages": [{"role": "user", "content": qa.prompt}, {"role": "assistant", "content": qa.answer}],
           "record_id": key, "question": qa.question}
    return json.dumps(row, ensure_ascii=False) + "\n"


def _write(f: TextIO, path: Path, line: str) -> None:
    with naming(path):  # a full disk is reported against this file
        f.write(line)


def _ordered_counts(counts: Counter, by_type: Counter, skipped: Counter, wanted: tuple[str, ...]) -> dict[str, Any]:
    keys = ("documents", "documents_cve", "documents_technique", "ignored_attack_other", "ignored_other", "records",
            "train_records", "val_records", "train_rows", "val_rows")
    return {**{k: counts[k] for k in keys}, "questions": sum(by_type.values()),
            "questions_by_type": {q: by_type[q] for q in wanted},
            "skipped": {reason: skipped[reason] for reason in sorted(skipped)}}
