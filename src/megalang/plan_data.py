"""`megalang plan data`: how long the data stages take for a corpus of a given size on a given number of cores.

Every figure comes from a rates file that `bench/data_stages.py --write FILE` measures: each stage's throughput
per core (MB of the stage's input per second) and how it scaled from one Ray worker to two. The plan divides each
stage's input by its rate; the stages run one after another, as `data prepare` → `tokenizer train` →
`data tokenize` do. Nothing here is fitted: a stage's hours on N cores are its core-hours divided by N and by the
parallel efficiency measured at 2 workers (the only scaling this module has a measurement for, so it is an
extrapolation beyond 2 and the plan says so).

Inputs of the stages, from `tokens` (what `data tokenize` writes) and `kept_fraction`:
  kept bytes = tokens × bytes per token (the prepared text the tokenizer reads);
  raw bytes  = kept bytes / kept_fraction (what `data prepare` reads);
  prepare (map phase: read, normalise, quality rules, scrubbing, MinHash signatures) reads the raw bytes;
  near_dedup (corpus phase: LSH buckets, clusters, survivors) is charged the raw bytes too, an upper bound — it
  sees what survived the per-document filters, which the rates file cannot know for your data;
  tokenizer (SentencePiece on a sample) is one process on a fixed-size sample whatever the corpus size;
  tokenize reads the kept bytes.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any

from megalang.config import DataPlanConfig
from megalang.errors import UserError
from megalang.plan import si

MB = 1e6
SECONDS_PER_HOUR = 3600.0
STAGES = ("prepare", "near_dedup", "tokenizer", "tokenize")
SCALED = ("prepare", "near_dedup", "tokenize")  # parallel stages; the tokenizer trains in one process
DEFAULT_RATES = "plan_data_rates.json"


def load_rates(path: str | None) -> tuple[dict[str, Any], str]:
    """The rates file (yours, or the one measured on megalang's CI machine) and where it came from."""
    if path is None:
        source = f"megalang/{DEFAULT_RATES}"
        text = resources.files("megalang").joinpath(DEFAULT_RATES).read_text()
    else:
        source, file = path, Path(path)
        if not file.is_file():
            raise UserError(f"{path}: no such rates file; write one with `python bench/data_stages.py --write {path}`")
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read the rates file ({e}); write it again with bench/data_stages.py")
    try:
        rates = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source}: not JSON ({e.msg} at line {e.lineno}); write it with bench/data_stages.py")
    check_rates(rates, source)
    return rates, source


def check_rates(rates: Any, source: str) -> None:
    """Every field the plan reads, present, numeric and positive; one line naming the first that is not."""
    def positive(value: Any, field: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UserError(f"{source}: {field} must be a positive number (got {value!r}); "
                            "write the file with bench/data_stages.py")

    if not isinstance(rates, dict) or not isinstance(rates.get("stages"), dict):
        raise UserError(f"{source}: expected an object with 'stages'; write it with bench/data_stages.py")
    positive(rates.get("bytes_per_token"), "bytes_per_token")
    for stage in STAGES:
        entry = rates["stages"].get(stage)
        if not isinstance(entry, dict):
            raise UserError(f"{source}: stages.{stage} is missing; write the file with bench/data_stages.py")
        if stage == "tokenizer":
            positive(entry.get("seconds"), f"stages.{stage}.seconds")
        else:
            positive(entry.get("mb_per_core_s"), f"stages.{stage}.mb_per_core_s")
            positive(entry.get("speedup_2_workers"), f"stages.{stage}.speedup_2_workers")


def plan_data(cfg: DataPlanConfig) -> dict[str, Any]:
    """Per stage: input bytes, core-hours (what the cores are held for, the parallel loss included), hours on
    `cfg.workers` cores; the bottleneck; totals and a verdict."""
    rates, source = load_rates(cfg.rates)
    bytes_per_token = cfg.bytes_per_token or rates["bytes_per_token"]
    kept = cfg.tokens * bytes_per_token
    raw = kept / cfg.kept_fraction
    inputs = {"prepare": raw, "near_dedup": raw, "tokenize": kept}
    stages: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        entry = rates["stages"][name]
        if name not in SCALED:
            seconds = entry["seconds"]
            stages[name] = {"input_bytes": entry.get("sample_mb", 0) * MB, "core_hours": seconds / SECONDS_PER_HOUR,
                            "hours": seconds / SECONDS_PER_HOUR, "efficiency": 1.0, "rate_mb_per_core_s": None}
            continue
        efficiency = min(1.0, entry["speedup_2_workers"] / 2) if cfg.workers > 1 else 1.0
        core_seconds = inputs[name] / MB / entry["mb_per_core_s"]
        stages[name] = {"input_bytes": inputs[name], "core_hours": core_seconds / efficiency / SECONDS_PER_HOUR,
                        "hours": core_seconds / (cfg.workers * efficiency) / SECONDS_PER_HOUR,
                        "efficiency": efficiency, "rate_mb_per_core_s": entry["mb_per_core_s"]}
    hours = sum(s["hours"] for s in stages.values())
    bottleneck = max(stages, key=lambda name: stages[name]["hours"])
    reasons = []
    if cfg.deadline_days is not None and hours > cfg.deadline_days * 24:
        need = math.ceil(cfg.workers * (hours - stages["tokenizer"]["hours"])
                         / max(1e-9, cfg.deadline_days * 24 - stages["tokenizer"]["hours"]))
        reasons.append(f"{hours / 24:.1f} days > deadline {cfg.deadline_days:g} days; about {need:,} cores would "
                       "meet it at the measured efficiency")
    notes = [f"rates: {source} ({rates.get('measured', 'no date recorded')})"]
    if cfg.workers > 2:
        notes.append("parallel efficiency was measured at 2 workers and is assumed to hold at "
                     f"{cfg.workers:,}; re-measure on your cluster with bench/data_stages.py")
    if cfg.kept_fraction == 1.0:
        notes.append("kept_fraction 1.0: the raw input is taken to be the prepared corpus; a web crawl loses most "
                     "of its bytes to the filters and dedup, so set --kept-fraction to your measured share")
    return {
        "tokens": cfg.tokens, "workers": cfg.workers, "bytes_per_token": bytes_per_token,
        "kept_fraction": cfg.kept_fraction, "raw_bytes": raw, "kept_bytes": kept,
        "shard_bytes": cfg.tokens * cfg.token_bytes, "stages": stages, "bottleneck": bottleneck,
        "hours": hours, "core_hours": sum(s["core_hours"] for s in stages.values()),
        "feasible": not reasons, "reasons": reasons, "notes": notes,
    }


def format_data_plan(r: dict[str, Any]) -> str:
    """The data plan as a short table for a terminal."""
    lines = [f"corpus     {si(r['tokens'])} tokens × {r['bytes_per_token']:.2f} bytes/token = "
             f"{_bytes(r['kept_bytes'])} prepared text from {_bytes(r['raw_bytes'])} raw "
             f"(kept {r['kept_fraction']:.0%}); shards {_bytes(r['shard_bytes'])}",
             f"workers    {r['workers']:,} cores",
             f"{'stage':<11}{'input':>10}{'MB/s/core':>11}{'efficiency':>12}{'core-hours':>14}{'hours':>12}"]
    for name, s in r["stages"].items():
        rate = f"{s['rate_mb_per_core_s']:.2f}" if s["rate_mb_per_core_s"] else "1 process"
        mark = "  ← bottleneck" if name == r["bottleneck"] else ""
        lines.append(f"{name:<11}{_bytes(s['input_bytes']):>10}{rate:>11}{s['efficiency']:>12.0%}"
                     f"{s['core_hours']:>14,.1f}{s['hours']:>12,.2f}{mark}")
    lines.append(f"total      {r['core_hours']:,.0f} core-hours, {r['hours']:,.1f} hours ({r['hours'] / 24:,.2f} days)")
    lines += [f"NOT FEASIBLE: {reason}" for reason in r["reasons"]]
    lines += [f"note: {note}" for note in r["notes"]]
    return "\n".join(lines)


def _bytes(value: float) -> str:
    for scale, suffix in ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{value:.0f} B"
