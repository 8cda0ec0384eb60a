"""The one hashing helper, the one atomic-write helper and the staging folder every stage writes through."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from megalang.errors import UserError

_CHUNK = 1 << 20
HASH_THREADS = min(8, os.cpu_count() or 1)  # enough to keep a local NVMe or a network filesystem busy


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_files(paths: list[Path]) -> list[str]:
    """SHA-256 of each file, in order, on a thread pool: hashlib releases the GIL on large buffers, so threads
    read and hash several files at disk speed rather than one core's."""
    if len(paths) <= 1:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), HASH_THREADS)) as pool:
        return list(pool.map(sha256_file, paths))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX needs the parent directory synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON so that a reader sees the old file or the whole new one, never a partial one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Text counterpart of `write_json_atomic`: tmp file, fsync, rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """One JSON line appended and synced: a log that a crash leaves readable up to its last whole line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: {what} is not valid JSON ({e}); re-create it") from None


@contextlib.contextmanager
def staging_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield `OUT.tmp/` to write into; on success it becomes `OUT/`, on any error it is removed.

    So an output folder either holds a complete artifact (with its manifest) or does not exist.
    """
    out = Path(out)
    if out.exists():
        if not overwrite and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out}: output already exists; choose another --out or remove it")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a killed earlier attempt; never looks complete (no rename happened)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:  # read-only place, a file in the way, a pseudo-filesystem such as /proc or /sys
        raise UserError(f"{out}: cannot create the output folder ({e.strerror}: {e.filename}); "
                        "choose an output path in a writable folder") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    fsync_dir(out.parent)
