"""Erasure lookup: which artifacts under some folders hold a raw file or a prepared document.

Answered from manifests and each prepared folder's document index alone, never by reading documents or shards:

- `doc-index.bin` (written by `data prepare`): one 12-byte record per kept document, sorted — the document id (the
  64-bit SHA-256 prefix of its prepared text, the `id` column) and the number of its source in `doc-sources.json`,
  both big-endian. A binary search finds an id; a scan counts a source's documents.
- every artifact's manifest names its inputs (raw files by path and SHA-256, artifacts by path and manifest hash),
  so whatever was made from an affected artifact is affected in turn: shard sets, tokenizers, runs, exports.

A run still training (or killed) has no manifest yet; its newest complete checkpoint's run_config.json names the
shards and tokenizer it reads.
"""

from __future__ import annotations

import json
import mmap
import os
import re
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.files import read_json, sha256_file

DOC_INDEX = "doc-index.bin"
DOC_SOURCES = "doc-sources.json"
RECORD = 12  # 8 bytes of document id + 4 bytes of source number
_MANIFEST = "manifest.json"
_DOC_ID = re.compile(r"^[0-9a-f]{16}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def write_doc_index(root: Path, records: bytes, sources: list[str]) -> None:
    """`records`: the sorted 12-byte records (data/documents.py DocWriter builds them)."""
    (root / DOC_INDEX).write_bytes(records)
    (root / DOC_SOURCES).write_text(json.dumps(sources, ensure_ascii=False), encoding="utf-8")


def index_has(root: Path, doc_id: str) -> int | None:
    """The source number of document `doc_id` in the prepared folder `root` (None when it is not there)."""
    key = bytes.fromhex(doc_id)
    path = root / DOC_INDEX
    if path.stat().st_size == 0:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        lo, hi = 0, len(m) // RECORD
        while lo < hi:
            mid = (lo + hi) // 2
            if m[mid * RECORD: mid * RECORD + 8] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo * RECORD < len(m) and m[lo * RECORD: lo * RECORD + 8] == key:
            return int.from_bytes(m[lo * RECORD + 8: lo * RECORD + 12], "big")
    return None


def source_counts(root: Path) -> dict[str, int]:
    """{source: documents kept from it} of a prepared folder, from its index."""
    sources = read_json(root / DOC_SOURCES, "document sources")
    counts = [0] * len(sources)
    with open(root / DOC_INDEX, "rb") as f:
        while block := f.read(RECORD * 65536):
            for i in range(8, len(block), RECORD):
                counts[int.from_bytes(block[i:i + 4], "big")] += 1
    return {s: n for s, n in zip(sources, counts)}


# --- the search -------------------------------------------------------------------------------------


def find_artifacts(dirs: list[str | os.PathLike]) -> dict[str, dict[str, Any]]:
    """{absolute folder: {"stage", "inputs"}} for every artifact under `dirs` (symbolic links not followed), and for
    every run folder still without a manifest."""
    found: dict[str, dict[str, Any]] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"{d}: no such folder; pass the folders that hold your prepared sets, shards, runs and exports")
        for top, subdirs, files in os.walk(d, followlinks=False):
            here = Path(top)
            subdirs[:] = sorted(s for s in subdirs if not s.endswith(".tmp") and s != "checkpoints")
            if _MANIFEST in files:
                try:
                    manifest = read_json(here / _MANIFEST, "manifest")
                except UserError:
                    continue  # a damaged manifest: `megalang verify` reports it; the search goes on
                if isinstance(manifest, dict) and "stage" in manifest:
                    found[str(here.resolve())] = {"stage": manifest["stage"], "inputs": manifest.get("inputs", []),
                                                  "manifest_sha256": sha256_file(here / _MANIFEST)}
            elif (here / "checkpoints").is_dir() and (inputs := _unfinished_inputs(here)):
                found[str(here.resolve())] = {"stage": "train (unfinished)", "inputs": inputs}
    return found


def _unfinished_inputs(run: Path) -> list[dict[str, Any]]:
    """What a run without a manifest (still training, or killed) reads, from its newest complete checkpoint's
    run_config.json; nothing when no checkpoint is complete (no weights hold anything yet)."""
    from megalang.store.checkpoints import latest_complete, read_run_config

    try:
        path = latest_complete(run)
        derived = read_run_config(path).get("derived", {}) if path is not None else {}
    except (UserError, AttributeError):
        return []
    # A URL (data.shards=s3://…) is kept as the run named it; a local folder as an absolute path.
    return [{"kind": "artifact", "path": derived[k] if "://" in derived[k] else str(Path(derived[k]).resolve())}
            for k in ("shards", "tokenizer_path", "sft") if isinstance(derived.get(k), str)]


def classify_query(query: str) -> tuple[str, str]:
    """("doc", id) | ("sha256", digest) for a document id, a file's SHA-256 or an existing file (hashed here),
    else ("path", query) to match raw inputs by their recorded path."""
    q = query.strip()
    if _DOC_ID.match(q.lower()):
        return "doc", q.lower()
    if _SHA256.match(q.lower()):
        return "sha256", q.lower()
    if Path(q).is_file():
        return "sha256", sha256_file(Path(q))
    if not q:
        raise UserError("--find: empty; pass a document id (16 hex digits), a raw file, its SHA-256 or its path")
    return "path", q


def _matches_raw(inp: dict[str, Any], kind: str, value: str) -> bool:
    if inp.get("kind") != "raw":
        return False
    if kind == "sha256":
        return inp.get("sha256") == value
    recorded = str(inp.get("path", ""))
    return recorded == value or recorded.endswith("/" + value.lstrip("/")) or str(Path(value).resolve()) == recorded


def find(query: str, dirs: list[str | os.PathLike]) -> dict[str, Any]:
    """Every artifact under `dirs` holding what `query` names: {"query", "kind", "hits": [{"path", "stage", "why",
    "depth"}], "dropped": [prepared sets that read the raw file but kept none of its documents]}."""
    kind, value = classify_query(query)
    artifacts = find_artifacts(dirs)
    hits: dict[str, dict[str, Any]] = {}
    dropped: list[dict[str, Any]] = []
    for path, art in artifacts.items():
        if kind == "doc":
            if art["stage"] == "data.prepare" and (Path(path) / DOC_INDEX).is_file():
                source = index_has(Path(path), value)
                if source is not None:
                    hits[path] = {"why": f"document {value} kept"}
            continue
        raws = [inp for inp in art["inputs"] if _matches_raw(inp, kind, value)]
        if not raws:
            continue
        if art["stage"] == "data.prepare" and (Path(path) / DOC_INDEX).is_file():
            counts = source_counts(Path(path))
            kept = sum(n for s, n in counts.items() if any(_same_source(s, r["path"]) for r in raws))
            if kept == 0:
                dropped.append({"path": path, "stage": art["stage"], "why": "read the file; every document was "
                                "filtered out or deduplicated"})
                continue
            hits[path] = {"why": f"{kept} documents kept from {raws[0]['path']}"}
        else:
            hits[path] = {"why": f"raw input {raws[0]['path']}"}
    # whatever was made from an affected artifact is affected; by manifest path (and hash where recorded)
    frontier = list(hits)
    depth = {p: 0 for p in hits}
    while frontier:
        parent = frontier.pop(0)
        for path, art in artifacts.items():
            if path in hits:
                continue
            for inp in art["inputs"]:
                if inp.get("kind") == "artifact" and str(Path(inp["path"]).resolve()) == parent:
                    digest = inp.get("manifest_sha256")
                    if digest and artifacts[parent].get("manifest_sha256") not in (None, digest):
                        continue  # made from an earlier artifact at the same path, since replaced
                    hits[path] = {"why": f"made from {parent}"}
                    depth[path] = depth[parent] + 1
                    frontier.append(path)
                    break
    ordered = sorted(hits, key=lambda p: (depth[p], p))
    return {"query": query, "kind": kind, "value": value,
            "hits": [{"path": p, "stage": artifacts[p]["stage"], "depth": depth[p], **hits[p]} for p in ordered],
            "dropped": dropped}


def _same_source(source: str, recorded: str) -> bool:
    """A document's `source` (the path as the reader saw it, or a URL) against a manifest's recorded raw path."""
    if source == recorded:
        return True
    return "://" not in source and str(Path(source).resolve()) == recorded

