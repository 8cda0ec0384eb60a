"""The trainer's fine-tuning hooks (issue #6): SFT data, LoRA, the objective, DP-SGD.

The trainer asks this module for four things and otherwise runs as for pretraining:
`prepare_data` (the shard manifest, tokenizing `data.sft` with the model's tokenizer), `build_loader` (SFT rows
or token windows), `wrap_model` (LoRA adapters) and `wrap_optimizer` (DP-SGD); `FineTune` carries the loss
function and what goes into metrics and summary.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from megalang.artifacts import MANIFEST, read_json, sha256_file
from megalang.config import RunConfig, SftTokenizeConfig
from megalang.data.shards import read_shard_manifest
from megalang.errors import UserError

SFT_DATA_DIR = "sft-data"  # RUN/sft-data: data.sft tokenized with the model's tokenizer


@dataclass
class FineTune:
    """What the trainer holds for a run: the loss function, and extra metrics / summary fields."""

    objective: Callable
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


def prepare_data(cfg: RunConfig) -> dict[str, Any]:
    """The shard manifest the run trains on. `data.sft=FILE` is tokenized into RUN/sft-data (once per input
    content) and `data.shards` then points there, so the resolved config names the exact shards."""
    if cfg.data.sft and cfg.data.shards:
        raise UserError("give either data.sft (a JSONL file) or data.shards (a shard folder), not both")
    if cfg.data.sft:
        cfg.data.shards = str(tokenize_sft_for_run(cfg))
    if not cfg.data.shards:
        raise UserError("data.shards is not set; pass data.shards=FOLDER (written by `megalang data tokenize`) or "
                        "data.sft=FILE.jsonl with model.pretrained=PATH")
    return read_shard_manifest(cfg.data.shards)


def tokenize_sft_for_run(cfg: RunConfig) -> Path:
    from megalang.data.sft import tokenize_sft

    if not cfg.model.pretrained:
        raise UserError("data.sft needs model.pretrained=PATH: its tokenizer and chat template render the chats")
    if not Path(cfg.data.sft).is_file():
        raise UserError(f"data.sft={cfg.data.sft}: no such file")
    out = Path(cfg.run.dir) / SFT_DATA_DIR
    if (out / MANIFEST).is_file():
        done = read_json(out / MANIFEST, "SFT data manifest")
        same_input = done.get("inputs") and done["inputs"][0].get("sha256") == sha256_file(cfg.data.sft)
        if same_input and done["config"].get("model") == cfg.model.pretrained:
            return out  # a resumed run: the same file, already tokenized
    tokenize_sft(SftTokenizeConfig(input=cfg.data.sft, model=cfg.model.pretrained, out=str(out), overwrite=True))
    return out


def is_sft(manifest: dict[str, Any]) -> bool:
    return manifest.get("format") == "sft"


def build_loader(cfg: RunConfig, manifest: dict[str, Any], rank: int, world: int):
    """SFT rows for an SFT shard folder; None: the trainer's token-window loader."""
    if not is_sft(manifest):
        return None
    from megalang.data.sft import SftLoader

    return SftLoader(cfg.data.shards, manifest, cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed, rank, world,
                     packing=cfg.data.packing, overlong=cfg.data.overlong)


# --- model, optimizer, objective --------------------------------------------------------------------


def check_finetune(cfg: RunConfig, device: torch.device, world: int, accum: int) -> None:
    """Settings that cannot work, named before the run folder is touched."""
    from megalang.model.lora import check_qlora
    from megalang.train.privacy import check_privacy

    check_qlora(cfg.lora, device)
    check_privacy(cfg, accum, world)
    if world > 1 and (cfg.lora.rank or cfg.privacy.target_epsilon is not None or cfg.train.objective == "distill"):
        raise UserError("LoRA, DP and distillation run on one process for now; launch without torchrun")
    if cfg.lora.rank and not cfg.model.pretrained:
        raise UserError("lora.rank > 0 needs model.pretrained=PATH: adapters train on top of a pretrained model")


def wrap_model(model, cfg: RunConfig):
    """LoRA adapters when lora.rank > 0 (the base is then frozen); otherwise the model as it is."""
    if not cfg.lora.rank:
        return model
    from megalang.model.lora import apply_lora

    return apply_lora(model, cfg.lora)


def build_finetune(cfg: RunConfig, manifest: dict[str, Any], model, optimizer, loader, device: torch.device):
    """(optimizer to train with, FineTune). Prints the trainable fraction, as a user deciding on LoRA wants it."""
    from megalang.model.lora import param_counts
    from megalang.train.objectives import build_objective
    from megalang.train.privacy import maybe_make_private

    optimizer, privacy = maybe_make_private(model, optimizer, cfg, loader)
    ft = FineTune(objective=build_objective(cfg, manifest, device), privacy=privacy,
                  sft_stats=getattr(loader, "stats", None), params=param_counts(model))
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
    return bool(is_sft(manifest) or cfg.lora.rank or cfg.privacy.target_epsilon is not None
                or cfg.train.objective != "ce" or cfg.model.pretrained)
