"""Checkpoint folders on disk, without torch: discovery, the COMPLETE.json marker, integrity and retention.

A checkpoint is written into `step-N.tmp/`, gets COMPLETE.json last, and is then renamed; only folders with a
COMPLETE.json are ever discovered, so a crash at any moment leaves the previous one in charge. COMPLETE.json
lists every file with its size and SHA-256 (each rank hashes the files it wrote); loading re-hashes against it
before reading a byte of state, so a flipped bit or a truncated shard stops the run with the file's name.
Checkpoints written before hashes were recorded still get their sizes checked.

`fault` arguments are crash-test hooks (train/faults.py's FaultPlan.at_save): called at named points of a save.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.files import fsync_dir, read_json, sha256_files, write_json_atomic
from megalang.store.run_dir import COMPLETE, CheckpointFiles, RunDir

FaultHook = Callable[[str, int], None]


def _no_fault(point: str, step: int) -> None:
    pass


# --- discovery --------------------------------------------------------------------------------------


def complete_checkpoints(run: RunDir | str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first."""
    return sorted((step, path) for step, path in RunDir.of(run).step_folders() if (path / COMPLETE).is_file())


def latest_complete(run: RunDir | str | os.PathLike) -> Path | None:
    found = complete_checkpoints(run)
    return found[-1][1] if found else None


def find_checkpoint(run: RunDir | str | os.PathLike, step: int | None = None, field: str = "--step") -> Path:
    """The newest complete checkpoint, or exactly the one of `step`; UserError naming what exists otherwise
    (`field` is the option or config key the step came from)."""
    run = RunDir.of(run)
    complete = complete_checkpoints(run)
    if step is not None:
        for s, path in complete:
            if s == step:
                return path
        steps = ", ".join(str(s) for s, _ in complete) or "none"
        raise UserError(f"{field}={step}: {run.root} has no complete checkpoint for step {step}; complete steps: "
                        f"{steps}; {_why_missing(run, step)}")
    if not complete:
        raise UserError(f"{run.root}: no complete checkpoint under {run.relative(run.checkpoints)}/; train first "
                        "(or wait for one)")
    return complete[-1][1]


def _why_missing(run: RunDir, step: int) -> str:
    if run.step_tmp(step).exists():
        return f"{run.relative(run.step_tmp(step))} is a save that never finished; pick a complete step"
    if run.step(step).exists():
        return f"{run.relative(run.step(step))} has no {COMPLETE} (its save or removal was cut short); pick a complete step"
    return f"there is no {run.relative(run.step(step))}; pick a complete step"


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.split("-")[-1])


# --- COMPLETE.json and integrity ----------------------------------------------------------------------


def hash_named(folder: Path, names: list[str]) -> dict[str, str]:
    """{name: SHA-256} of the named files of `folder`, hashed in parallel (store.files.sha256_files)."""
    return dict(zip(names, sha256_files([folder / name for name in names])))


def describe_checkpoint_files(folder: Path, known: dict[str, str] | None = None) -> dict[str, Any]:
    """The `files` (name → size) and `sha256` (name → hex) entries of COMPLETE.json for `folder`; files in
    `known` were hashed by the rank that wrote them, the others are hashed here."""
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != COMPLETE)
    known = {name: digest for name, digest in (known or {}).items() if name in names}
    hashes = {**known, **hash_named(folder, [name for name in names if name not in known])}
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
    for name, digest in hash_named(folder, to_hash).items():
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


def read_run_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's saved config, checked against COMPLETE.json first: a flipped byte must read as a
    corrupt checkpoint, not as a config change (this file decides whether a resume is allowed)."""
    folder = Path(folder)
    verify_files(folder, [CheckpointFiles.RUN_CONFIG])
    return read_json(folder / CheckpointFiles.RUN_CONFIG, "checkpoint config")


def recorded_files(run: RunDir | str | os.PathLike) -> dict[str, dict[str, Any]]:
    """{path relative to the run folder: size and SHA-256} of every complete checkpoint's files as its
    COMPLETE.json records them: the run's manifest takes these instead of reading the checkpoints back."""
    run = RunDir.of(run)
    known = {}
    for _step, folder in complete_checkpoints(run):
        record = read_complete(folder)
        for name, digest in (record.get("sha256") or {}).items():
            known[run.relative(folder / name)] = {"size": record["files"][name], "sha256": digest}
    return known


def run_checkpoint_problems(run: RunDir | str | os.PathLike, known: dict[str, str] | None = None) -> list[str]:
    """Every complete checkpoint of a run against its COMPLETE.json, one line per problem.

    `known` maps absolute file paths to SHA-256 values already verified against the file (the run's
    manifest): a file whose COMPLETE.json hash equals a verified one is not hashed a second time.
    """
    problems = []
    for _step, folder in complete_checkpoints(run):
        try:
            record = read_complete(folder)
        except UserError as e:
            problems.append(str(e))
            continue
        hashes = record.get("sha256") or {}
        todo = [n for n in sorted(record["files"]) if (known or {}).get(str(folder / n)) != hashes.get(n, "-")]
        problems += file_problems(folder, record, todo)
    return problems


# --- writing and retiring -----------------------------------------------------------------------------


def start_checkpoint(run: RunDir, step: int) -> Path:
    """A fresh `step-N.tmp/` to write into (rank 0), after retiring checkpoints newer than `step`."""
    retire_newer(run, step)
    tmp = run.step_tmp(step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def mark_complete(run: RunDir, step: int, tokens_seen: int, digests: dict[str, str],
                  fault: FaultHook = _no_fault) -> Path:
    """COMPLETE.json (every file's size and SHA-256: the tensor files' from the ranks that wrote them, the
    rest hashed here; all ranks' files are on disk by now), then the rename that makes the checkpoint
    discoverable, then the parent fsync that makes the rename durable."""
    tmp, final = run.step_tmp(step), run.step(step)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(tmp / COMPLETE, {"step": step, "tokens_seen": tokens_seen, "time": now,
                                       **describe_checkpoint_files(tmp, digests)})
    fault("before_rename", step)
    if final.exists():  # an older save of the same step that a resume is about to replace
        remove_checkpoint(final)
    os.replace(tmp, final)
    fsync_dir(run.checkpoints)
    return final


def remove_checkpoint(path: Path, fault: FaultHook = _no_fault, fault_step: int = 0) -> None:
    # COMPLETE.json goes first (and is synced gone): a deletion cut short must not leave a folder that looks
    # complete. DCP's .metadata next, so not even DCP itself would read what is left.
    (path / COMPLETE).unlink(missing_ok=True)
    fsync_dir(path)
    (path / CheckpointFiles.DCP_METADATA).unlink(missing_ok=True)
    fault("during_retention", fault_step)
    shutil.rmtree(path)


def retire_newer(run: RunDir, step: int) -> None:
    """Remove complete checkpoints newer than the one about to be written. They exist only when the run was
    sent back to an older step (checkpoint.resume_step, e.g. past a corrupt checkpoint): that future was
    abandoned, and left in place the newest of them would be what the next automatic resume picks."""
    for newer, path in complete_checkpoints(run):
        if newer > step:
            remove_checkpoint(path)


def apply_retention(run: RunDir | str | os.PathLike, keep: int, fault: FaultHook = _no_fault) -> None:
    """Keep the newest `keep` complete checkpoints; remove older ones and older incomplete leftovers."""
    run = RunDir.of(run)
    complete = complete_checkpoints(run)
    for _step, path in complete[:-keep]:
        remove_checkpoint(path, fault, fault_step=complete[-1][0])
    if complete:
        newest = complete[-1][0]
        for step, path in run.step_folders():
            if step < newest and not (path / COMPLETE).exists():
                shutil.rmtree(path, ignore_errors=True)


def remove_stale_tmp(run: RunDir | str | os.PathLike) -> None:
    """`step-N.tmp/` folders are saves that never completed (the process died); nothing can use them."""
    for path in RunDir.of(run).tmp_folders():
        shutil.rmtree(path, ignore_errors=True)
