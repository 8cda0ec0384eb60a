"""`megalang eval privacy`: what a trained run leaks, DP or not. Canary exposure (Carlini et al. 2019, "The Secret
Sharer") for the secrets data.canaries inserted, against never-inserted control secrets as the chance baseline;
a loss-threshold membership-inference attack (Yeom et al. 2018) on training vs held-out examples; and the ε the
run's accountant reported, side by side in RUN/privacy.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from megalang.data.canaries import canary_context, fill, read_canaries
from megalang.errors import UserError
from megalang.store.files import read_json
from megalang.store.run_dir import RunDir

CHANCE_EXPOSURE = 1 / math.log(2)  # E[-log2 U] for a rank uniform over the space: a secret the model never saw


# --- exposure ---------------------------------------------------------------------------------------


def candidate_secrets(digits: int, candidates: int, rng: np.random.Generator) -> tuple[list[str], bool]:
    """(secrets to rank against, exact): the whole space when it has at most `candidates` secrets, else a uniform
    sample of `candidates` (with replacement, as the paper's sampling estimate)."""
    space = 10**digits
    if space <= candidates:
        return [str(i).zfill(digits) for i in range(space)], True
    return [str(int(i)).zfill(digits) for i in rng.integers(0, space, size=candidates)], False


def exposure(loss: float, others: np.ndarray) -> float:
    """log2 |R| − log2 rank, with the rank estimated from the candidates: −log2((k + 1) / (M + 1)) where k of the
    M other candidates have a lower loss. Exact when the candidates are the whole space (M + 1 = |R|); sampled,
    it is the paper's estimate of the rank's quantile and at most log2(M + 1)."""
    lower = int((others < loss).sum())
    return -math.log2((lower + 1) / (len(others) + 1))


def secret_losses(scorer, record: dict[str, Any], secrets: list[str]) -> np.ndarray:
    """−log p(canary sentence | the chat before it) for each secret: the log-perplexity the paper ranks by (the
    sentence's fixed part is shared by every candidate, so it shifts all losses alike)."""
    context = canary_context(scorer.tokenizer, record["prompt"])
    pairs = [scorer.encode_pair(context, fill(record["template"], s)) for s in secrets]
    return -np.asarray(scorer.score_sequences(pairs), dtype=np.float64)


def measure_exposure(scorer, record: dict[str, Any], candidates: int, rng: np.random.Generator) -> dict[str, Any]:
    pool, exact = candidate_secrets(int(record["digits"]), candidates, rng)
    pool_losses = secret_losses(scorer, record, pool)
    by_secret = dict(zip(pool, pool_losses))

    def one(secret: str, loss: float) -> dict[str, Any]:
        others = np.asarray([v for s, v in zip(pool, pool_losses) if s != secret])
        return {"secret": secret, "loss": float(loss), "exposure": exposure(loss, others)}

    def scored(secrets: list[str]) -> list[dict[str, Any]]:
        missing = [s for s in secrets if s not in by_secret]
        extra = dict(zip(missing, secret_losses(scorer, record, missing))) if missing else {}
        return [one(s, by_secret.get(s, extra.get(s))) for s in secrets]

    canaries, controls = scored(record["canaries"]), scored(record.get("controls") or [])
    return {
        "candidate_space": int(record["candidate_space"]), "candidates_scored": len(pool),
        "exposure_method": "exact" if exact else "sampled",
        "max_exposure": math.log2(len(pool)) if exact else math.log2(len(pool) + 1),
        "chance_exposure": CHANCE_EXPOSURE, "repeats": int(record["repeats"]),
        "canaries": canaries, "exposure_mean": float(np.mean([c["exposure"] for c in canaries])),
        "controls": controls,
        "control_exposure_mean": float(np.mean([c["exposure"] for c in controls])) if controls else None,
    }


# --- membership inference ---------------------------------------------------------------------------


def run_shards(run: RunDir) -> tuple[str, dict[str, Any], int]:
    """(the shard folder the run trained on, its manifest, the run's train.seq_len)."""
    from megalang.config import RunConfig, load_config
    from megalang.data.shards import read_shard_manifest

    cfg = load_config(RunConfig, run.config)
    shards = read_json(run.resolved, "resolved values").get("data.shards") if run.resolved.is_file() else None
    shards = shards or cfg.data.shards
    if not shards or not Path(shards).is_dir():
        raise UserError(f"{run.root}: the shard folder it trained on ({shards}) is gone; restore it to measure "
                        "membership inference")
    return shards, read_shard_manifest(shards), cfg.train.seq_len


def split_examples(shards: str, manifest: dict[str, Any], split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, loss mask) per document: SFT folders mask assistant tokens, plain shards score every token."""
    from megalang.data.sft import read_sft_examples
    from megalang.data.shards import open_split

    if not manifest["splits"].get(split, {}).get("documents"):
        return []
    if manifest.get("format") == "sft":
        return read_sft_examples(shards, manifest, split)
    return [(d, np.ones(len(d), np.uint8)) for d in open_split(shards, split, manifest).documents()]


@torch.no_grad()
def example_losses(model, examples: list[tuple[np.ndarray, np.ndarray]], seq_len: int, batch_size: int) -> np.ndarray:
    """Mean next-token loss over each example's masked targets, truncated to seq_len + 1 tokens as in training."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        batch = [(ids[: seq_len + 1], mask[: seq_len + 1]) for ids, mask in examples[start: start + batch_size]]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (x, m) in enumerate(batch):
            ids[r, : len(x)] = torch.from_numpy(x.astype(np.int64))
            labels[r, : len(x)] = torch.where(torch.from_numpy(m.astype(bool)), ids[r, : len(x)], -100)
            attn[r, : len(x)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, :-1].float()
        targets = labels[:, 1:].to(device)
        nll = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none", ignore_index=-100)
        out += ((nll.sum(1) / (targets != -100).sum(1).clamp(min=1))).tolist()
    return np.asarray(out)


def measure_membership(model, run: RunDir, members: int, batch_size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Loss-threshold attack: score = −loss; AUC over members (train, canaries excluded) vs held-out (val)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    shards, manifest, seq_len = run_shards(run)
    train = split_examples(shards, manifest, "train")
    train = train[: len(train) - int(manifest.get("counts", {}).get("train_only_documents") or 0)]  # no canaries
    val = split_examples(shards, manifest, "val")
    usable = [[e for e in xs if e[1][1: seq_len + 1].any()] for xs in (train, val)]
    if not usable[1] or not usable[0]:
        return {"mia_auc": None, "mia_tpr_at_1pct_fpr": None, "mia_members": len(usable[0]), "mia_nonmembers": 0,
                "mia_note": f"{shards}: no held-out (val) examples to compare with; train with data.sft_val or "
                            "data.sft_val_fraction (or shards with a val split)"}
    picked = [[xs[i] for i in sorted(rng.choice(len(xs), min(members, len(xs)), replace=False))] for xs in usable]
    loss_in, loss_out = (example_losses(model, xs, seq_len, batch_size) for xs in picked)
    labels = np.r_[np.ones(len(loss_in)), np.zeros(len(loss_out))]
    scores = -np.r_[loss_in, loss_out]
    fpr, tpr, _ = roc_curve(labels, scores)
    return {"mia_auc": float(roc_auc_score(labels, scores)), "mia_tpr_at_1pct_fpr": float(np.interp(0.01, fpr, tpr)),
            "mia_members": len(loss_in), "mia_nonmembers": len(loss_out),
            "member_loss_mean": float(loss_in.mean()), "nonmember_loss_mean": float(loss_out.mean())}


# --- the command ------------------------------------------------------------------------------------


def run_privacy_budget(run: RunDir) -> dict[str, Any]:
    """ε and δ as the run's accountant reported them in summary.json (None without DP or before it finished)."""
    summary = read_json(run.summary, "run summary") if run.summary.is_file() else {}
    privacy = summary.get("privacy") or {}
    return {"dp": bool(privacy), "epsilon": summary.get("epsilon"), "delta": privacy.get("delta"),
            "noise_multiplier": privacy.get("noise_multiplier")}


def open_run(path: str) -> RunDir:
    run = RunDir(Path(path))
    if not run.root.is_dir():
        raise UserError(f"--run {path}: no such folder; pass a run folder written by `megalang train`")
    if not RunDir.looks_like_run(run.root):
        raise UserError(f"--run {path}: not a run folder (no config.yaml or checkpoints/); pass one written by "
                        "`megalang train`")
    return run


def evaluate_privacy(run_path: str, candidates: int = 10_000, members: int = 200, seed: int = 0,
                     batch_size: int = 64, out: str | None = None) -> dict[str, Any]:
    """Exposure, membership inference and ε for one run; written to RUN/privacy.json (and `out`). Everything that
    can be wrong with the input is checked before the model loads."""
    from megalang.evaluate.common import load_scorer, result_header, write_result

    if candidates < 1 or members < 1 or batch_size < 1:
        raise UserError("--candidates, --members and --batch-size must be positive")
    run = open_run(run_path)
    record = read_canaries(run)
    loaded, scorer = load_scorer(str(run.root), batch_size)
    rng = np.random.default_rng([seed, 19])
    settings = {"candidates": candidates, "members": members, "seed": seed, "batch_size": batch_size}
    result = {**result_header("privacy", str(run.root), None, settings), **run_privacy_budget(run),
              **measure_exposure(scorer, record, candidates, rng),
              **measure_membership(loaded.model, run, members, batch_size, rng)}
    write_result(run.privacy, result)
    write_result(out, result)
    maybe_refresh_report(run)
    return result


def maybe_refresh_report(run: RunDir) -> None:
    """A run that has a report shows ε, exposure and AUC in it from now on (monitor/report.py reads privacy.json)."""
    if run.report.is_file():
        from megalang.monitor.report import write_report

        write_report(run.root)
