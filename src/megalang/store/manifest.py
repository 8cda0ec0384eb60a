"""Artifacts: folders with a `manifest.json` saying what made them (stage, config, inputs by SHA-256, library
versions) and what they hold (every file with its size and SHA-256); their verification and lineage."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from megalang import __version__
from megalang.errors import UserError
from megalang.store.files import read_json, sha256_file, sha256_files, write_json_atomic

MANIFEST = "manifest.json"
_LIBRARIES = ("torch", "transformers", "tokenizers", "sentencepiece", "safetensors", "numpy", "pyarrow")


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


def verify_artifact(root: str | os.PathLike) -> tuple[list[str], dict[str, str]]:
    """Re-hash an artifact against its manifest: (one line per problem, {absolute path: SHA-256} of the files
    that matched, so a caller checking the same files another way need not read them twice)."""
    root = Path(root)
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
    for inp in manifest.get("inputs", []):
        if inp.get("kind") == "artifact" and inp.get("manifest_sha256") and Path(inp["path"]).is_dir():
            actual = sha256_file(Path(inp["path"]) / MANIFEST)
            if actual != inp["manifest_sha256"]:
                problems.append(f"{inp['path']}/{MANIFEST}: input artifact changed since {root} was made")
    return problems, verified


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
