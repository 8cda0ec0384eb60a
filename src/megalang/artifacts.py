"""Artifacts: folders with a `manifest.json` saying what made them and what they hold (SHA-256 per file).

Also the one hashing helper and the one atomic-write helper every stage uses.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from megalang import __version__
from megalang.errors import UserError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20
HASH_THREADS = min(8, os.cpu_count() or 1)  # enough to keep a local NVMe or a network filesystem busy
_LIBRARIES = ("torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "numpy", "pyarrow")


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


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "megalang": __version__}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def describe_input(path: str | os.PathLike) -> dict[str, Any]:
    """How an artifact refers to one of its inputs: another artifact (by its manifest hash) or a raw file."""
    path = Path(path).resolve()
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        return {
            "path": str(path),
            "kind": "artifact",
            "stage": manifest.get("stage"),
            "manifest_sha256": sha256_file(path / MANIFEST),
        }
    return {"path": str(path), "kind": "raw", "size": path.stat().st_size, "sha256": sha256_file(path)}


def hash_files(root: Path, exclude: tuple[str, ...] = (MANIFEST,),
               known: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """{relative path: size and SHA-256} of every file under `root`. `known` ({relative path: size and
    SHA-256} recorded by whoever wrote the file, such as a checkpoint's COMPLETE.json) is taken as it is when
    the size still matches, so a run's final manifest does not re-read checkpoints hashed when saved."""
    known = known or {}
    sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    sizes = {rel: size for rel, size in sizes.items() if rel not in exclude}
    todo = [rel for rel, size in sizes.items() if known.get(rel, {}).get("size") != size]
    digests = dict(zip(todo, sha256_files([root / rel for rel in todo])))
    return {rel: {"size": size, "sha256": digests.get(rel) or known[rel]["sha256"]} for rel, size in sizes.items()}


def write_manifest(
    root: str | os.PathLike,
    stage: str,
    config: dict[str, Any],
    inputs: list[dict[str, Any]],
    counts: dict[str, Any],
    known_files: dict[str, dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Hash every file under `root` (`known_files`: hashes recorded when they were written, see hash_files) and
    write `root/manifest.json` (the last file an artifact gets)."""
    root = Path(root)
    manifest = {
        "stage": stage,
        "megalang_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": inputs,
        "counts": counts,
        **extra,
        "libraries": library_versions(),
        "files": hash_files(root, known=known_files),
    }
    write_json_atomic(root / MANIFEST, manifest)
    return manifest


def read_manifest(root: str | os.PathLike, stage: str | None = None, what: str = "", made_by: str = "") -> dict[str, Any]:
    """The manifest of a completed artifact; with `stage`, refuse an artifact of another stage."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such folder")
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root}: no {MANIFEST}; not a megalang artifact (or it was not completed)")
    manifest = read_json(root / MANIFEST, "manifest")
    if not isinstance(manifest, dict) or "stage" not in manifest or "files" not in manifest:
        raise UserError(f"{root / MANIFEST}: not a megalang manifest (no 'stage'/'files'); re-create the artifact")
    if stage is not None and manifest["stage"] != stage:
        raise UserError(f"{root}: is a '{manifest['stage']}' artifact, not {what}; pass the folder written by `{made_by}`")
    return manifest


def artifact_file(root: str | os.PathLike, rel: str) -> Path:
    """`root/rel` for a file name read from an artifact's own manifest, refusing names that leave the folder
    (absolute, `..`): a crafted manifest must not make megalang read or hash files outside what the user named."""
    root = Path(root)
    path = root / rel
    if Path(rel).is_absolute() or not path.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{root / MANIFEST}: lists '{rel}', which is outside {root}; the manifest is damaged or "
                        "crafted, re-create the artifact")
    return path


def verify(root: str | os.PathLike) -> list[str]:
    """Re-hash an artifact, and a run folder's checkpoints against their COMPLETE.json; return one line per
    problem (empty when everything matches)."""
    root = Path(root)
    if not (root / MANIFEST).is_file() and (root / "checkpoints").is_dir():
        return _checkpoint_problems(root, {})  # a run still training (or killed): its checkpoints can be checked
    manifest = read_manifest(root)
    problems, verified, todo = [], {}, []
    for rel, info in manifest["files"].items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{p}: missing")
        elif p.stat().st_size != info["size"]:
            problems.append(f"{p}: size {p.stat().st_size} != {info['size']} in manifest")
        else:
            todo.append((p, info["sha256"]))
    for (p, expected), actual in zip(todo, sha256_files([p for p, _ in todo])):
        if actual != expected:
            problems.append(f"{p}: SHA-256 mismatch")
        else:
            verified[str(p)] = expected
    if (root / "checkpoints").is_dir():
        problems += _checkpoint_problems(root, verified)
    for inp in manifest.get("inputs", []):
        if inp.get("kind") == "artifact" and Path(inp["path"]).is_dir():
            actual = sha256_file(Path(inp["path"]) / MANIFEST)
            if actual != inp["manifest_sha256"]:
                problems.append(f"{inp['path']}/{MANIFEST}: input artifact changed since {root} was made")
    return problems


def _checkpoint_problems(run_dir: Path, verified: dict[str, str]) -> list[str]:
    """A run folder's complete checkpoints against the SHA-256 list in their COMPLETE.json (files the
    manifest already verified with the same hash are not read twice)."""
    from megalang.train.checkpoint_integrity import run_checkpoint_problems

    return run_checkpoint_problems(run_dir, verified)


def lineage(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Walk from an artifact back to the raw input: one entry per artifact, depth-first, each once."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()

    def walk(path: Path, depth: int) -> None:
        key = str(path.resolve())
        if key in seen:
            return
        seen.add(key)
        manifest = read_manifest(path)
        raw = [i for i in manifest.get("inputs", []) if i.get("kind") == "raw"]
        chain.append(
            {
                "depth": depth,
                "path": key,
                "stage": manifest["stage"],
                "created": manifest.get("created"),
                "manifest_sha256": sha256_file(path / MANIFEST),
                "counts": manifest.get("counts", {}),
                "raw_inputs": len(raw),
                "raw_bytes": sum(i.get("size", 0) for i in raw),
            }
        )
        for inp in manifest.get("inputs", []):
            if inp.get("kind") == "artifact":
                parent = Path(inp["path"])
                if not (parent / MANIFEST).is_file():
                    chain.append({"depth": depth + 1, "path": str(parent), "stage": inp.get("stage"), "missing": True})
                    continue
                walk(parent, depth + 1)

    walk(Path(root), 0)
    return chain
