"""The trainer's fine-tuning hooks: SFT and classifier data, LoRA, DP-SGD, SFT val rows.

Setup asks this module for: `prepare_data` (the shard manifest, tokenizing `data.sft` or `data.classify` with the
model's tokenizer), `build_loader` (SFT rows, labelled examples, or None for token windows), `wrap_model` (LoRA
adapters), `build_finetune` (DP-SGD) and `open_val` / `validator` (the held-out loss of SFT rows, or a classifier's
val metrics, train/classifier.py); `FineTune` carries what goes into metrics and summary.json. The loss itself is
train/objectives.py's, chosen at setup for every run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang.config import RunConfig, SftTokenizeConfig
from megalang.data.remote import is_remote, read_remote_manifest
from megalang.data.shards import read_shard_manifest
from megalang.errors import UserError
from megalang.store.files import read_json, sha256_file
from megalang.store.manifest import MANIFEST
from megalang.store.run_dir import RunDir


@dataclass
class FineTune:
    """What the trainer holds for a fine-tuning run: extra metrics and summary fields."""

    privacy: Any = None  # train.privacy.PrivacyState
    sft_stats: Any = None  # data.sft.SftStats
    params: tuple[int, int] | None = None  # (trainable, total) after wrapping
    notes: dict[str, Any] = field(default_factory=dict)

    def metrics(self) -> dict[str, Any]:
        return self.privacy.metrics() if self.privacy else {}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.notes)
        if self.params:
            out["trainable_fraction"] = self.params[0] / self.params[1]
        if self.sft_stats is not None:
            s = self.sft_stats
            out["sft"] = {"examples": s.examples, "truncated": s.truncated, "dropped": s.dropped, "rows": s.rows,
                          "loss_tokens_per_epoch": s.loss_tokens}
        if self.privacy:
            out["privacy"] = self.privacy.summary()
            out["epsilon"] = out["privacy"]["epsilon"]
        return out


# --- data -------------------------------------------------------------------------------------------


def prepare_data(cfg: RunConfig) -> tuple[str, dict[str, Any]]:
    """(the shard folder the run trains on, its manifest). `data.sft=FILE` is tokenized into RUN/sft-data (once
    per input content), which is then the shard folder; the config itself is left as the user wrote it, so
    re-running `megalang train RUN/config.yaml` finds data.sft again and resumes."""
    if cfg.data.sft and cfg.data.shards:
        raise UserError("give either data.sft (a JSONL file) or data.shards (a shard folder), not both")
    if cfg.data.classify:
        from megalang.train.classifier_data import prepare_classify_data

        return prepare_classify_data(cfg)  # RUN/classify-data: labelled records, tokenized as eval classify does
    if cfg.data.classify_val:
        raise UserError("data.classify_val is the held-out set of data.classify; set data.classify too")
    if (cfg.data.sft_val or cfg.data.sft_val_fraction) and not cfg.data.sft:
        raise UserError("data.sft_val and data.sft_val_fraction split data.sft; for data.shards, tokenize a val split "
                        "with `megalang data tokenize --format sft --set val_input=FILE`")
    if cfg.data.canaries.count and not cfg.data.sft:
        raise UserError("data.canaries are inserted while data.sft is tokenized for the run; with data.shards they "
                        "are not supported yet: pass the chats as data.sft=FILE.jsonl")
    if cfg.data.sft:
        shards = str(tokenize_sft_for_run(cfg))
        return shards, read_shard_manifest(shards)
    if not cfg.data.shards:
        raise UserError("data.shards is not set; pass data.shards=FOLDER (written by `megalang data tokenize`) or "
                        "data.sft=FILE.jsonl with model.pretrained=PATH")
    if is_remote(cfg.data.shards):  # s3://, gs://, …: the manifest now, the files through setup's ShardCache
        return cfg.data.shards, read_remote_manifest(cfg.data.shards, cfg.data.storage_options)
    return cfg.data.shards, read_shard_manifest(cfg.data.shards)


def tokenize_sft_for_run(cfg: RunConfig) -> Path:
    from megalang.data.sft import tokenize_sft

    if not cfg.model.pretrained:
        raise UserError("data.sft needs model.pretrained=PATH: its tokenizer and chat template render the chats")
    for field_name, value in (("data.sft", cfg.data.sft), ("data.sft_val", cfg.data.sft_val)):
        if value and not Path(value).is_file():
            raise UserError(f"{field_name}={value}: no such file")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Every rank would tokenize into the same RUN/sft-data at once; one tokenized folder serves them all.
        raise UserError("data.sft is tokenized by a single process; run `megalang data tokenize --format sft` first "
                        "and pass data.shards=FOLDER to a multi-process run")
    run = RunDir(Path(cfg.run.dir))
    out = run.sft_data
    canaries = None
    if cfg.data.canaries.count:  # into the train split only, after data.sft's examples (data/canaries.py)
        from megalang.data.canaries import write_canaries

        canaries = str(write_canaries(cfg.data.canaries, run))
    else:  # an earlier leg's canaries are no longer in the data: eval privacy must not measure them
        run.canaries.unlink(missing_ok=True)
        run.canary_chats.unlink(missing_ok=True)
    wanted = SftTokenizeConfig(input=cfg.data.sft, model=cfg.model.pretrained, out=str(out), overwrite=True,
                               val_input=cfg.data.sft_val, val_fraction=cfg.data.sft_val_fraction, train_only=canaries)
    if (out / MANIFEST).is_file() and already_tokenized(read_json(out / MANIFEST, "SFT data manifest"), wanted):
        return out  # a resumed run: the same files and settings, already tokenized
    tokenize_sft(wanted)
    return out


def already_tokenized(done: dict[str, Any], wanted: SftTokenizeConfig) -> bool:
    """The folder holds exactly these input files (by SHA-256), tokenized with the same settings."""
    files = [f for f in (wanted.input, wanted.val_input, wanted.train_only) if f]
    hashes = [i.get("sha256") for i in done.get("inputs") or []]
    same_settings = all(done["config"].get(k) == v for k, v in wanted.model_dump().items() if k != "overwrite")
    return same_settings and hashes == [sha256_file(f) for f in files]


def is_sft(manifest: dict[str, Any]) -> bool:
    return manifest.get("format") == "sft"


def is_classify(manifest: dict[str, Any]) -> bool:
    return manifest.get("format") == "classify"


def build_loader(cfg: RunConfig, shards: str, manifest: dict[str, Any], rank: int, world: int):
    """SFT rows for an SFT shard folder, labelled examples for a classifier; None: the trainer's token windows."""
    if is_classify(manifest):
        from megalang.train.classifier_data import ClassifyLoader

        return ClassifyLoader(shards, manifest, cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed, rank, world)
    if not is_sft(manifest):
        return None
    from megalang.data.sft import SftLoader

    return SftLoader(shards, manifest, cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed, rank, world,
                     packing=cfg.data.packing, overlong=cfg.data.overlong)


# --- model, optimizer, objective --------------------------------------------------------------------


def check_finetune(cfg: RunConfig, device: torch.device, world: int, accum: int) -> None:
    """Settings that cannot work, named before the run folder is touched."""
    from megalang.model.lora import check_qlora
    from megalang.train.privacy import check_privacy

    check_qlora(cfg.lora, device)
    check_privacy(cfg, accum, world)
    if world > 1 and (cfg.lora.rank or cfg.privacy.target_epsilon is not None or cfg.loss.objective == "distill"
                      or cfg.data.classify):
        raise UserError("LoRA, DP, distillation and classifiers run on one process for now; launch without torchrun")
    if cfg.lora.rank and not cfg.model.pretrained:
        raise UserError("lora.rank > 0 needs model.pretrained=PATH: adapters train on top of a pretrained model")


def quantization(cfg: RunConfig, device: torch.device) -> dict[str, Any]:
    """from_pretrained kwargs that load the frozen base 4-bit for QLoRA (lora.qlora); {} otherwise."""
    from megalang.model.lora import quantization_config

    return quantization_config(cfg.lora, device) if cfg.lora.rank else {}


def wrap_model(model, cfg: RunConfig):
    """LoRA adapters when lora.rank > 0 (the base is then frozen); otherwise the model as it is."""
    if not cfg.lora.rank:
        return model
    from megalang.model.lora import apply_lora

    return apply_lora(model, cfg.lora)


def build_finetune(cfg: RunConfig, manifest: dict[str, Any], model, optimizer, loader, device: torch.device):
    """(optimizer to train with, FineTune). Prints the trainable fraction, as a user deciding on LoRA wants it."""
    from megalang.model.lora import param_counts
    from megalang.train.privacy import maybe_make_private

    optimizer, privacy = maybe_make_private(model, optimizer, cfg, loader)
    ft = FineTune(privacy=privacy,
                  sft_stats=getattr(loader, "stats", None), params=param_counts(model))
    if is_classify(manifest):
        from megalang.train.classifier import classify_notes

        ft.notes["classify"] = classify_notes(cfg, manifest)
    trainable, total = ft.params
    if trainable != total or cfg.model.pretrained:
        print(f"trainable params: {trainable:,} of {total:,} ({100 * trainable / total:.3f}%)", flush=True)
    if ft.sft_stats is not None and (ft.sft_stats.truncated or ft.sft_stats.dropped):
        s = ft.sft_stats
        print(f"SFT data: {s.truncated} of {s.examples} examples truncated, {s.dropped} dropped "
              f"(longer than train.seq_len+1={cfg.train.seq_len + 1} tokens, data.overlong={cfg.data.overlong})",
              flush=True)
    return optimizer, ft


def is_active(cfg: RunConfig, manifest: dict[str, Any]) -> bool:
    """Whether the run needs any of this module (a plain pretraining run keeps the trainer's own loss)."""
    return bool(is_sft(manifest) or is_classify(manifest) or cfg.lora.rank or cfg.privacy.target_epsilon is not None
                or cfg.loss.objective != "ce" or cfg.model.pretrained)


# --- held-out loss ----------------------------------------------------------------------------------


@dataclass
class SftVal:
    """The val split of an SFT shard folder as rows built exactly like training rows (same packing, truncation
    and assistant-only labels), so val_loss and the training loss measure the same thing."""

    rows: list
    seq_len: int
    micro_batch: int
    pad_id: int

    def batches(self, rank: int, world: int, limit: int):
        """This rank's micro-batches, the same count on every rank: a sharded model's forward is a collective,
        so a rank out of rows runs empty rows (all labels ignored) instead of stopping early."""
        from megalang.data.sft import Row, collate_row

        per_step = self.micro_batch * world
        steps = min(limit, -(-len(self.rows) // per_step))
        for step in range(steps):
            first = step * per_step + rank * self.micro_batch
            rows = [self.rows[i] if i < len(self.rows) else Row() for i in range(first, first + self.micro_batch)]
            cols = zip(*(collate_row(r, self.seq_len, self.pad_id) for r in rows))
            input_ids, labels, positions = (torch.from_numpy(np.stack(c)) for c in cols)
            yield {"input_ids": input_ids, "labels": labels, "position_ids": positions}


def open_val(cfg: RunConfig, shards: str, manifest: dict[str, Any]):
    """The SFT val rows (or a classifier's val examples), or None (no val_loss) when the folder has no val split."""
    from megalang.data.sft import build_rows, read_sft_examples

    if is_classify(manifest):
        from megalang.train.classifier_data import open_classify_val

        return open_classify_val(cfg, shards, manifest)

    if not manifest["splits"].get("val", {}).get("documents"):
        return None
    examples = read_sft_examples(shards, manifest, "val")
    rows, _stats = build_rows(examples, cfg.train.seq_len, cfg.data.packing, cfg.data.overlong, cfg.seed)
    pad_id = next(v for v in (manifest.get("pad_id"), manifest.get("eos_id"), 0) if v is not None)
    return SftVal(rows, cfg.train.seq_len, cfg.train.micro_batch_size, pad_id) if rows else None


def validator(val_split):
    """The held-out evaluation for these val rows: SFT's val_loss, a classifier's metrics; None: token windows'."""
    from megalang.train.classifier_data import ClassifyVal

    if isinstance(val_split, SftVal):
        return evaluate_sft_loss
    if isinstance(val_split, ClassifyVal):
        from megalang.train.classifier import evaluate_classifier

        return evaluate_classifier
    return None


@torch.no_grad()
def evaluate_sft_loss(t) -> float:
    """Token-mean CE over the val split's assistant tokens: each data rank scores its rows, then the sums and
    counts are added over the world (tensor-parallel ranks of one replica add equal shares, which divides out)."""
    from megalang.parallel.distributed import world_mean
    from megalang.train.loss import lm_loss
    from megalang.train.objectives import IGNORE, model_inputs

    t.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=t.device)  # (CE sum, target tokens)
    for batch in t.val_split.batches(t.loader.rank, t.loader.world, t.cfg.train.eval_batches):
        kwargs, labels = model_inputs({k: v.to(t.device) for k, v in batch.items()})
        with t.autocast():
            total[0] += lm_loss(t.model, labels, reduction="sum", **kwargs)
        total[1] += (labels != IGNORE).sum()
    t.model.train()
    if t.dims is not None:
        total = world_mean(total, 1)
    return (total[0] / total[1]).item()
