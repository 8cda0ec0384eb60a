"""The end of a run: summary.json from metrics.jsonl (the whole run, over every resumed leg), then the run's
manifest, the last file it gets."""

from __future__ import annotations

from typing import Any

import torch

from megalang.monitor.flops import mfu
from megalang.monitor.live import maybe_write_report
from megalang.monitor.metrics import read_metrics
from megalang.monitor.report import clear_report
from megalang.parallel.distributed import (
    barrier,
)
from megalang.store.checkpoints import complete_checkpoints, recorded_files
from megalang.store.files import write_json_atomic
from megalang.store.manifest import describe_input, write_manifest
from megalang.train.state import Trainer


def finish(t: Trainer, wall_seconds: float) -> dict[str, Any]:
    """summary.json, then manifest.json (the last file: it hashes everything else)."""
    t.checkpointer.finish_pending()
    barrier()  # every rank's last checkpoint shards are on disk before rank 0 hashes the folder
    summary = build_summary(t, wall_seconds)
    if t.group.rank != 0:
        return summary
    write_json_atomic(t.run.summary, summary)
    clear_report(t.run_dir)  # an earlier leg's report must not be hashed into the manifest, then rewritten
    write_manifest(
        t.run_dir, "train", t.cfg.model_dump(mode="json"),
        inputs=[t.shard_cache.describe() if t.shard_cache else describe_input(t.run_config["derived"]["shards"]),
                describe_input(t.run_config["derived"]["tokenizer_path"])],
        counts={"steps": t.step, "tokens_seen": t.tokens_seen, "params": summary["total_params"],
                "checkpoints": len(complete_checkpoints(t.run_dir))},
        known_files=recorded_files(t.run_dir),  # checkpoints were hashed when saved: not read back here
    )
    maybe_write_report(t.cfg.metrics, t.run_dir)  # after the manifest: a view on the run, not part of it
    return summary


def count_params(t: Trainer, trainable: bool = False) -> int:
    """Whole-model parameter count (DTensor numel is already global; pipeline stages add theirs up)."""
    n = sum(p.numel() for p in t.model.parameters() if p.requires_grad or not trainable)
    if t.schedule is None:
        return n
    total = torch.tensor([n], dtype=torch.int64)
    torch.distributed.all_reduce(total, group=t.mesh["pp"].get_group())
    return int(total.item())


def build_summary(t: Trainer, wall_seconds: float) -> dict[str, Any]:
    """From metrics.jsonl, so a resumed run reports the whole run, not only its last leg."""
    records = read_metrics(t.run.metrics)
    losses = [r["loss"] for s, r in records.items() if s <= t.step and r.get("loss") is not None]
    evaluated = [r for s, r in records.items() if s <= t.step and r.get("val_loss") is not None]
    vals = [r["val_loss"] for r in evaluated]
    extra_val = {k: v for k, v in evaluated[-1].items() if k.startswith("val_") and k != "val_loss"} if evaluated else {}
    rate = t.clock.steady_rate()
    if rate is None:  # nothing trained in this call (already complete): the logged rates
        logged = [r["tokens_per_s"] for r in records.values() if r.get("tokens_per_s")]
        rate = sum(logged) / len(logged) if logged else None
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "val_loss": vals[-1] if vals else None,
        **extra_val,  # a classifier's val_accuracy, val_macro_f1 at the last evaluation
        "tokens_seen": t.tokens_seen,
        "steps": t.step,
        "trainable_params": count_params(t, trainable=True),
        "total_params": count_params(t),
        "wall_seconds": round(wall_seconds, 3),
        "tokens_per_s": rate,
        "mfu": mfu(rate, t.flops_per_token, t.peak) if rate else None,
        "peak_flops": t.peak,
        "flops_per_token": t.flops_per_token,
        "precision": t.cfg.train.precision,
        "device": str(t.device),
        "resumed_from_step": t.resumed_from,
        "run_dir": str(t.run_dir.resolve()),
        **t.health.summary(),  # skipped_steps, spike_skipped_steps, skipped_at
        **(t.finetune.summary() if t.finetune is not None else {}),  # trainable fraction, SFT counts, DP epsilon
    }
