"""What may change between a checkpoint and the command that resumes it (issue #4, promise 4).

Every config key is classified here, explicitly. Changes that alter the meaning or the shape of the saved
state (architecture, tokenizer, sequence length, global batch, seed and data order, objective, LoRA layout,
privacy budget) are refused with the key's name. Benign ones (logging, checkpoint cadence, step budget,
optimizer hyperparameters, parallel layout, monitoring) are allowed, printed one line per key, and recorded
in `RUN/resumes.jsonl`. A key this module does not know (a new config field nobody classified) is refused:
a resume that silently means something else is the failure this promise exists to prevent.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from megalang.config import MOVED_KEYS, RunConfig
from megalang.errors import UserError
from megalang.torch_compat import set_last_lr
from megalang.train.muon import is_muon_group
from megalang.train.optim import base_lr, lr_factor

# Prefixes of dotted keys (`config.` is dropped; `derived.` keys are values the trainer computes). The longest
# matching prefix decides. Refused keys come with the name the user knows them by.
REFUSED = {
    "model": "the architecture (model.*) defines the saved weights",
    "train.seq_len": "positions and the sample boundaries depend on it",
    "derived.global_batch_tokens": "train.global_batch_tokens: the schedule and the data position count in it",
    "derived.tokenizer_sha256": "tokenizer: token ids would mean other strings",
    "derived.vocab_size": "tokenizer vocabulary size: the embedding shapes depend on it",
    "derived.shards_content_sha256": "data.shards content: the saved data position indexes these exact shards",
    "seed": "the sample order is a function of the seed",
    "data.curriculum": "it changes the sample order",
    "data.packing": "it changes what a sample is (SFT)",
    "data.overlong": "it changes which samples exist (SFT)",
    "loss.objective": "the loss the run optimises",
    "train.document_mask": "the attention pattern the run trains with (within documents or across them)",
    "train.optimizer": "the saved optimizer state (AdamW's moments, Muon's momentum) is the other optimizer's",
    "lora.rank": "adapter shapes",
    "lora.targets": "which modules hold adapters",
    "lora.qlora": "the base weights' format",
    "lora.alpha": "the adapters' scale (what the trained adapter weights mean)",
    "distill.teacher": "the objective's target distribution",
    "privacy": "the (epsilon, delta) accounting covers the whole run with one noise level",
    "data.classify": "the labelled examples the classifier trains on",
    "data.labels": "the label words the classifier learns",
    "data.class_weights": "the loss the run optimises",
    "data.classify_template": "the prompt every example is trained with",
    "data.canaries": "which secrets the training stream holds (RUN/canaries.json is what `eval privacy` audits)",
}
BENIGN = (
    "train.max_steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.progress",
    "optimizer", "schedule", "loss.fused", "health",
    "train.precision", "train.device", "train.compile", "train.deterministic", "train.activation_checkpointing",
    "train.activation_checkpointing_every", "train.micro_batch_size", "train.global_batch_tokens",
    "checkpoint", "parallel", "run", "metrics", "evals", "launcher", "workers", "ray",
    # a site's checkpoint holds the global weights of a round: the federation's settings do not change its meaning
    "federated",
    # data.shards/sft*: where the tokens come from; the tokens themselves are checked by derived.shards_content_sha256
    "data.verify", "data.shards", "data.tokenizer", "data.cache_dir", "data.read_ahead", "data.storage_options", "data.sft", "data.sft_val", "data.sft_val_fraction", "data.classify_val", "lora.dropout", "distill.alpha", "distill.temperature",
    "derived.world_size", "derived.parallel", "derived.grad_accum", "derived.tokenizer_path", "derived.shards",
)
# Benign changes the checkpoint would otherwise override: the optimizer's param groups and the scheduler's
# base LR come back from the checkpoint, so these are re-applied after loading (see `apply_optimizer_changes`).
OPTIMIZER_KEYS = ("optimizer.lr", "schedule.min_lr", "schedule.warmup_steps", "schedule.shape", "schedule.decay_fraction",
                  "train.max_steps", "optimizer.weight_decay",
                  "optimizer.beta1", "optimizer.beta2", "optimizer.eps", "optimizer.muon_lr",
                  "optimizer.muon_weight_decay", "optimizer.muon_momentum", "optimizer.muon_adjust_lr",
                  "optimizer.muon_ns_steps")
_ORDER = ("model", "train.seq_len", "derived.global_batch_tokens", "derived.tokenizer_sha256")  # named first


def shards_fingerprint(manifest: dict[str, Any]) -> str:
    """SHA-256 over the shard files' own SHA-256s: the same tokens give the same value wherever the folder
    lives and whenever it was written (the manifest's timestamps and paths do not enter)."""
    files = {name: info["sha256"] for name, info in sorted(manifest.get("files", {}).items())}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"seq_len": 1}} → {"train.seq_len": 1}; lists are values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def run_config_keys(run_config: dict[str, Any]) -> dict[str, Any]:
    """The comparable keys of a checkpoint's run_config.json: config keys without `config.`, derived ones with.
    A checkpoint saved before keys moved (config/run.py MOVED_KEYS, e.g. train.lr) reads under today's names."""
    config = {MOVED_KEYS.get(key, key): value for key, value in flatten(run_config.get("config", {})).items()}
    return {**config, **flatten(run_config.get("derived", {}), "derived.")}


def classify(key: str) -> str:
    """'refused', 'benign' or 'unknown', by the longest matching prefix."""
    best, verdict = -1, "unknown"
    for prefix in list(REFUSED) + list(BENIGN):
        if (key == prefix or key.startswith(prefix + ".")) and len(prefix) > best:
            best, verdict = len(prefix), "refused" if prefix in REFUSED else "benign"
    return verdict


def reason(key: str) -> str:
    matches = [p for p in REFUSED if key == p or key.startswith(p + ".")]
    return REFUSED[max(matches, key=len)] if matches else "megalang does not know whether it can change on resume"


def changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (old, new)} for every key that differs (a key missing on one side reads None)."""
    old, new = run_config_keys(saved), run_config_keys(current)
    if "derived.shards_content_sha256" not in old:  # checkpoints written before the fingerprint existed
        new.pop("derived.shards_content_sha256", None)
        if old.get("derived.shards") != new.get("derived.shards"):
            old["derived.shards_content_sha256"], new["derived.shards_content_sha256"] = "unknown", "this folder's"
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def display_name(key: str) -> str:
    """The name a user sets: refused derived keys by their REFUSED label, others without `derived.`."""
    if key.startswith("derived.") and classify(key) == "refused":
        return reason(key).split(":")[0]
    return key.removeprefix("derived.")


def check_resume_compatible(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Raise a UserError naming the first refused change (and how many more); return the benign changes."""
    diff = changes(saved, current)
    known = run_config_keys(saved)
    # A key the checkpoint predates had its default then: logged only, unless a refused key now has another value
    # (e.g. train.optimizer=muon on a checkpoint older than the key, whose state is AdamW's).
    defaults = run_config_keys({"config": RunConfig().model_dump(mode="json")})
    off_default = {k for k in diff if k not in known and k in defaults and diff[k][1] != defaults[k]}
    refused = sorted((k for k in diff if classify(k) != "benign" and (k in known or k in off_default)),
                     key=lambda k: next((i for i, p in enumerate(_ORDER) if k == p or k.startswith(p + ".")), len(_ORDER)))
    if refused:
        first = refused[0]
        old, new = diff[first] if first in known else (defaults[first], diff[first][1])
        others = [display_name(k) for k in refused[1:]]
        also = f"; also changed: {', '.join(others)}" if others else ""
        raise UserError(
            f"{display_name(first)} changed since checkpoint {path} ({old} → {new}; {reason(first)}){also}; restore "
            "it to resume, or train into a new run.dir"
        )
    return diff


def optimizer_changed(diff: dict[str, tuple[Any, Any]]) -> bool:
    """Whether a resume changed settings that live in the optimizer's param groups and the scheduler."""
    return any(k in diff for k in OPTIMIZER_KEYS)


def record_resume(resumes: Path, path: Path, diff: dict[str, tuple[Any, Any]]) -> None:
    """Print one line per changed key and append the resume to `resumes` (RUN/resumes.jsonl) with old → new
    values (rank 0)."""
    step = int(path.name.split("-")[-1])
    for key, (old, new) in diff.items():
        print(f"resume from step {step}: {display_name(key)} {old} → {new}", file=sys.stderr, flush=True)
    record = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "step": step,
              "checkpoint": str(path), "changes": {display_name(k): [old, new] for k, (old, new) in diff.items()}}
    with open(resumes, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def apply_optimizer_changes(optimizer, scheduler, cfg) -> None:
    """The checkpoint restored the old LR, betas, eps, weight decay (and Muon's momentum, lr scale and
    Newton–Schulz steps) into the param groups and the old base LRs into the scheduler; put the new ones in, and
    the LR of the next step on the new schedule. AdamW's weight decay goes to the groups `build_adamw` decays
    (all parameters matrices or embeddings)."""
    opt = cfg.optimizer
    scheduler.base_lrs = [base_lr(group, opt) for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr(group, opt)
        if is_muon_group(group):
            group["weight_decay"], group["momentum"] = opt.muon_decay(), opt.muon_momentum
            group["adjust_lr_fn"], group["ns_steps"] = opt.muon_adjust_lr, opt.muon_ns_steps
        else:
            group["betas"], group["eps"] = (opt.beta1, opt.beta2), opt.eps
            if all(p.ndim >= 2 for p in group["params"]):
                group["weight_decay"] = opt.weight_decay
        group["lr"] = group["initial_lr"] * lr_factor(scheduler.last_epoch, cfg)
    set_last_lr(scheduler, [group["lr"] for group in optimizer.param_groups])
