"""What a complete checkpoint holds on disk, and the check that it still holds exactly that.

COMPLETE.json lists every file of `step-N/` with its size and SHA-256 (each rank hashes the files it wrote;
rank 0 gathers them). Loading re-hashes against that list before reading a byte of state, so a flipped bit
or a truncated shard stops the run with the file's name instead of training on garbage. Checkpoints
written before hashes were recorded still get their sizes checked. Imports no torch: artifacts.verify uses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megalang.artifacts import read_json, sha256_files
from megalang.errors import UserError

COMPLETE = "COMPLETE.json"


def hash_files(folder: Path, names: list[str]) -> dict[str, str]:
    """{name: SHA-256} of the named files of `folder`, hashed in parallel (artifacts.sha256_files)."""
    return dict(zip(names, sha256_files([folder / name for name in names])))


def describe_checkpoint_files(folder: Path, known: dict[str, str] | None = None) -> dict[str, Any]:
    """The `files` (name → size) and `sha256` (name → hex) entries of COMPLETE.json for `folder`; files in
    `known` were hashed by the rank that wrote them, the others are hashed here."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != COMPLETE)
    known = {name: digest for name, digest in (known or {}).items() if name in names}
    hashes = {**known, **hash_files(folder, [name for name in names if name not in known])}
    return {"files": {name: (folder / name).stat().st_size for name in names},
            "sha256": {name: hashes[name] for name in names}}


def read_complete(folder: Path) -> dict[str, Any]:
    record = read_json(folder / COMPLETE, "checkpoint COMPLETE marker")
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise UserError(f"{folder / COMPLETE}: not a checkpoint COMPLETE marker (no 'files'); remove {folder}")
    return record


def file_problems(folder: Path, record: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """One line per file (of `names`, default all) that is missing, has another size, or another SHA-256
    than COMPLETE.json records. Sizes first: a truncated file is caught without reading it."""
    names = sorted(record["files"]) if names is None else names
    hashes = record.get("sha256") or {}  # absent in checkpoints written before hashes were recorded
    problems, to_hash = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != record["files"][name]:
            problems.append(f"{path}: {path.stat().st_size} bytes, {COMPLETE} records {record['files'][name]}")
        elif name in hashes:
            to_hash.append(name)
    for name, digest in hash_files(folder, to_hash).items():
        if digest != hashes[name]:
            problems.append(f"{folder / name}: SHA-256 differs from the one {COMPLETE} records")
    return problems


def corrupt_error(folder: Path, problems: list[str]) -> UserError:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return UserError(
        f"{problems[0]}{more}: checkpoint {folder} is corrupt; resume from an older step with "
        f"checkpoint.resume_step=N (or --step N), or remove {folder}"
    )


def verify_files(folder: Path, names: list[str] | None = None) -> None:
    """Raise a UserError naming the first bad file of `folder` (all files, or `names`)."""
    record = read_complete(folder)
    if names is not None:
        names = [n for n in names if n in record["files"]]
    problems = file_problems(folder, record, names)
    if problems:
        raise corrupt_error(folder, problems)


def recorded_files(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{path relative to the run folder: size and SHA-256} of every complete checkpoint's files as its
    COMPLETE.json records them: the run's manifest takes these instead of reading the checkpoints back."""
    from megalang.train.checkpoint import complete_checkpoints

    known = {}
    for _step, folder in complete_checkpoints(run_dir):
        record = read_complete(folder)
        for name, digest in (record.get("sha256") or {}).items():
            known[(folder / name).relative_to(run_dir).as_posix()] = {"size": record["files"][name], "sha256": digest}
    return known


def run_checkpoint_problems(run_dir: Path, known: dict[str, str] | None = None) -> list[str]:
    """`megalang verify RUN`: every complete checkpoint against its COMPLETE.json, one line per problem.

    `known` maps absolute file paths to SHA-256 values already verified against the file (the run's
    manifest): a file whose COMPLETE.json hash equals a verified one is not hashed a second time.
    """
    from megalang.train.checkpoint import complete_checkpoints

    problems = []
    for _step, folder in complete_checkpoints(run_dir):
        try:
            record = read_complete(folder)
        except UserError as e:
            problems.append(str(e))
            continue
        hashes = record.get("sha256") or {}
        todo = [n for n in sorted(record["files"]) if (known or {}).get(str(folder / n)) != hashes.get(n, "-")]
        problems += file_problems(folder, record, todo)
    return problems
