"""`megalang verify` and `megalang lineage`: what an artifact or a run folder holds, checked and traced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from megalang.cli.app import app, counts_line, err, out, user_errors
from megalang.errors import UserError


def verify(path: str | Path, key: str | Path | None = None) -> list[str]:
    """Re-hash an artifact against its manifest and, for a run folder, every complete checkpoint against its
    COMPLETE.json; one line per problem (empty when everything matches). A run still training (or killed) has
    no manifest yet: its checkpoints are checked alone. With `key` (a public key in PEM), also the release's
    signature (model.sig), one line per file that differs from what was signed."""
    from megalang.store.checkpoints import run_checkpoint_problems
    from megalang.store.manifest import verify_artifact
    from megalang.store.run_dir import RunDir

    run = RunDir(Path(path))
    if key is not None:
        from megalang.export.sign import check_public_key

        check_public_key(key)  # a missing key file is the user's error (exit 2), before any hashing
    if not run.manifest.is_file() and run.checkpoints.is_dir():
        problems = run_checkpoint_problems(run)
    else:
        problems, verified = verify_artifact(path)
        if run.checkpoints.is_dir():  # files the manifest already verified with the same hash are not read twice
            problems += run_checkpoint_problems(run, verified)
    if key is not None:
        problems += signature_problems(path, key, problems)
    return problems


def signature_problems(path: str | Path, key: str | Path, known: list[str]) -> list[str]:
    """One line per file the signature disagrees with, leaving out files the manifest check already named."""
    from megalang.export.sign import verify_signature

    named = {line.split(": ", 1)[0] for line in known}
    return [f"{p}: {why}" for p, why in verify_signature(path, key).items() if p not in named]


@app.command("verify")
@user_errors
def verify_cmd(
    path: Annotated[str, typer.Argument(help="Artifact folder.")],
    key: Annotated[Optional[str], typer.Option(help="Public key (PEM) of the key that signed the release "
                                                    "(`megalang export --sign`): also check model.sig.")] = None,
):
    """Re-hash an artifact against its manifest (and with --key its signature); exit 1 naming each mismatching file."""
    problems = verify(path, key)
    for p in problems:
        err.print(f"mismatch: {p}", markup=False)
    if problems:
        raise typer.Exit(1)
    out.print(f"ok: {path}" + (f" (signature verified with {key})" if key else ""))


@app.command("lineage")
@user_errors
def lineage_cmd(
    paths: Annotated[list[str], typer.Argument(help="Artifact folder; with --find, the folders to search.")],
    find: Annotated[Optional[str], typer.Option(help="A document id (the `id` column, 16 hex digits), a raw file, its "
                                                    "SHA-256 or its recorded path: list every artifact under the "
                                                    "folders that holds it (erasure requests).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Print the chain of artifacts back to the raw input; with --find, the artifacts that hold a file or document."""
    if find is not None:
        return _find(find, paths, as_json)
    if len(paths) != 1:
        raise UserError(f"lineage: one artifact folder, got {len(paths)}; to search several folders pass --find")
    from megalang.store.manifest import lineage

    chain = lineage(paths[0])
    if as_json:
        out.print(json.dumps(chain, indent=2), markup=False)
        return
    for node in chain:
        pad = "  " * node["depth"]
        if node.get("missing"):
            out.print(f"{pad}{node['stage']}  {node['path']}  (missing)", markup=False)
            continue
        raw = f"  raw inputs: {node['raw_inputs']} files, {node['raw_bytes']} bytes" if node["raw_inputs"] else ""
        out.print(f"{pad}{node['stage']}  {node['path']}  sha256:{node['manifest_sha256'][:12]}  {counts_line(node['counts'])}{raw}", markup=False)


def _find(query: str, dirs: list[str], as_json: bool) -> None:
    from megalang.store.lineage import find

    result = find(query, dirs)
    if as_json:
        out.print(json.dumps(result, indent=2), markup=False)
        return
    if not result["hits"]:
        out.print(f"not found: no artifact under {', '.join(dirs)} holds {query}", markup=False)
    for hit in result["hits"]:
        out.print(f"{'  ' * hit['depth']}{hit['stage']}  {hit['path']}  ({hit['why']})", markup=False)
    for d in result["dropped"]:
        out.print(f"not kept: {d['stage']}  {d['path']}  ({d['why']})", markup=False)
