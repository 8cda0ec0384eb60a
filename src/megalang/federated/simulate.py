"""`megalang federated simulate`: a whole federation on one machine, as real processes on 127.0.0.1: the server in
this process, each site a `megalang federated client` subprocess with its own data, CPU threads and log
(RUN/site-NAME.log). Nothing is shared between them but the gRPC connection, as across organisations."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.federated.server import check_free, serve


def site_sources(cfg: RunConfig, clients: int, root: Path) -> list[dict[str, str | None]]:
    """Each site's data keys: federated.site_data (a .jsonl is data.sft, a folder data.shards), or data.sft's
    lines dealt round-robin into RUN/data/site-I.jsonl."""
    fed = cfg.federated
    if fed.site_data:
        if len(fed.site_data) != clients:
            raise UserError(f"clients={clients} but federated.site_data names {len(fed.site_data)} sources: give one "
                            "per site")
        out = []
        for path in fed.site_data:
            if not Path(path).exists():
                raise UserError(f"federated.site_data: {path} does not exist")
            out.append({"data.shards": path, "data.sft": None} if Path(path).is_dir()
                       else {"data.sft": path, "data.shards": None})
        return out
    if not cfg.data.sft:
        raise UserError("federated simulate needs federated.site_data (one data source per site) or data.sft (a JSONL "
                        "file dealt to the sites)")
    try:
        lines = [line for line in Path(cfg.data.sft).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"data.sft={cfg.data.sft}: cannot read it ({e})") from None
    if len(lines) < clients:
        raise UserError(f"data.sft={cfg.data.sft} has {len(lines)} examples, fewer than clients={clients}")
    (root / "data").mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(clients):
        path = root / "data" / f"site-{i}.jsonl"
        path.write_text("".join(line + "\n" for line in lines[i::clients]), encoding="utf-8")
        out.append({"data.sft": str(path), "data.shards": None})
    return out


def sites_gone(sites: list[subprocess.Popen], root: Path, needed: int) -> str | None:
    """Why the federation cannot go on (fewer than `needed` sites still running), naming the first failed site's
    last log line; None while enough run."""
    running = sum(p.poll() is None for p in sites)
    if running >= needed:
        return None
    for i, p in enumerate(sites):
        if p.poll() not in (None, 0):
            lines = (root / f"site-{i}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return f"site {i} exited with code {p.returncode}: {lines[-1] if lines else '(no output)'}"
    return f"only {running} sites still running, federated.min_clients={needed}"


def simulate(cfg: RunConfig, log=print) -> dict:
    """Start the sites, serve the rounds, wait for the sites to finish; returns the server's summary with each
    site's exit code."""
    fed = cfg.federated
    clients = fed.clients or len(fed.site_data)
    if not clients:
        raise UserError("federated simulate needs clients=N (or federated.site_data with one source per site)")
    if clients < fed.min_clients:
        raise UserError(f"clients={clients} is fewer than federated.min_clients={fed.min_clients}: no round could "
                        "complete")
    check_free(fed.address)
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    sources = site_sources(cfg, clients, root)
    recipe = root / "federation.yaml"
    config = cfg.model_dump(mode="json")
    config["federated"].update(clients=clients, site_data=[])
    recipe.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    threads = str(max(1, (os.cpu_count() or 1) // clients))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    sites = []
    for i, source in enumerate(sources):
        overrides = [f"federated.site={i}", "train.progress=false"] + [
            f"{k}={'null' if v is None else v}" for k, v in source.items()]
        with open(root / f"site-{i}.log", "w", encoding="utf-8") as out:
            sites.append(subprocess.Popen([sys.executable, "-m", "megalang", "federated", "client", str(recipe),
                                           *overrides], stdout=out, stderr=subprocess.STDOUT, env=env))
    log(f"federated: {clients} sites started (logs: {root}/site-N.log, {threads} CPU threads each)")
    try:
        summary = serve(cfg, log, abort=lambda: sites_gone(sites, root, fed.min_clients))
        deadline = time.monotonic() + fed.round_timeout_s
        codes = []
        for process in sites:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
    finally:
        for process in sites:
            if process.poll() is None:
                process.kill()
                process.wait()
    summary["sites"] = {f"site-{i}": {"exit_code": code, "log": str(root / f"site-{i}.log")}
                        for i, code in enumerate(codes)}
    return summary
