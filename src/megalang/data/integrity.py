"""Shard integrity at train start (issue #4, promise 5): every file of the shard folder a run reads is checked
against the size and SHA-256 its manifest recorded, before the run folder is touched.

Hashing runs on a thread pool (hashlib releases the GIL on large updates, so threads read and hash in parallel)
and the ranks split the files between them, then agree on the result. A cache keyed by (path, size, mtime_ns)
remembers what was hashed, so a restart does not re-read a 10 TB corpus: `data.verify=auto` trusts it,
`always` re-hashes everything, `never` skips the check. The cache lives in `$XDG_CACHE_HOME/megalang/`
(default `~/.cache/megalang/`), so a read-only shard folder works; point XDG_CACHE_HOME at persistent storage
where home folders do not survive a restart (containers). The ranks are assumed to see the same shard files
(shared storage, like the run folder).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from megalang.errors import UserError
from megalang.store.files import sha256_files, write_json_atomic
from megalang.store.manifest import MANIFEST, artifact_file

CACHE_FILE = "shard-sha256.json"


@dataclass(frozen=True)
class Expected:
    path: Path
    size: int
    sha256: str


def verify_shards(root: str | os.PathLike, manifest: dict[str, Any], mode: str = "auto", rank: int = 0,
                  world: int = 1) -> int:
    """Check every file the manifest lists; each rank hashes its share, all ranks get the verdict (a UserError
    naming the first damaged file, on every rank, so the job fails cleanly). Returns the files hashed here."""
    if mode == "never":
        return 0
    root = Path(root)
    files = expected_files(root, manifest)
    cache = load_cache()
    problems, entries, hashed = check_files(root, files[rank::world], cache if mode == "auto" else {})
    if world > 1 and dist.is_initialized():
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, (problems, entries))
        problems = [p for part, _ in gathered for p in part]
        entries = {k: v for _, part in gathered for k, v in part.items()}
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one writer per machine (the cache may be machine-local)
        save_cache(cache, entries)
    if problems:
        more = f" (and {len(problems) - 1} more damaged files)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}")
    return hashed


def expected_files(root: Path, manifest: dict[str, Any]) -> list[Expected]:
    """Every file the shard manifest lists (the splits' .bin/.idx and what else the folder holds), in a fixed
    order so that every rank computes the same split of the work."""
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise UserError(f"{root / MANIFEST}: has no 'files' list to verify against; re-run `megalang data tokenize`")
    for split in manifest.get("splits", {}).values():
        for name in split.get("files", []):
            if name not in listed:
                raise UserError(f"{root / MANIFEST}: split file '{name}' has no SHA-256 in 'files'; the manifest is "
                                "damaged, re-run `megalang data tokenize`")
    return [Expected(artifact_file(root, rel), int(info["size"]), info["sha256"]) for rel, info in sorted(listed.items())]


def check_files(root: Path, files: list[Expected], cache: dict[str, dict[str, Any]]):
    """(problems, cache entries, files hashed): sizes first (a truncated file needs no hashing), then the
    SHA-256 of every file the cache does not vouch for, on a thread pool."""
    problems, entries, todo = [], {}, []
    for f in files:
        try:
            st = f.path.stat()
        except FileNotFoundError:
            problems.append(f"{f.path}: shard file missing; restore it or re-run `megalang data tokenize`")
            continue
        if st.st_size != f.size:
            problems.append(f"{f.path}: {st.st_size} bytes but {root / MANIFEST} says {f.size} (truncated or "
                            "overwritten); restore the file or re-run `megalang data tokenize`")
            continue
        key = str(f.path.resolve())
        hit = cache.get(key)
        if hit and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
            entries[key] = hit
        else:
            todo.append((f, key, st))
    for (f, key, st), digest in zip(todo, sha256_files([f.path for f, _, _ in todo])):
        entries[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    for f in files:
        actual = entries.get(str(f.path.resolve()), {}).get("sha256")
        if actual is not None and actual != f.sha256:
            problems.append(f"{f.path}: SHA-256 {actual[:12]}… does not match {f.sha256[:12]}… in {root / MANIFEST}; "
                            "the shard is damaged: restore the file or re-run `megalang data tokenize`")
    return problems, entries, len(todo)


# --- the cache --------------------------------------------------------------------------------------


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "megalang" / CACHE_FILE


def load_cache() -> dict[str, dict[str, Any]]:
    """Entries by absolute path; an unreadable or damaged cache is an empty one (it only saves time)."""
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
        return data["files"] if isinstance(data.get("files"), dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def save_cache(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> None:
    """Merge and write atomically, dropping entries of files that no longer exist (deleted test corpora, old
    tokenizations); a cache that cannot be written is skipped, never an error."""
    if all(old.get(k) == v for k, v in new.items()):
        return  # nothing new: a restart that trusted the cache writes nothing
    merged = {k: v for k, v in {**old, **new}.items() if k in new or os.path.exists(k)}
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"version": 1, "files": merged})
    except OSError:
        pass
