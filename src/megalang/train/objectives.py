"""Training losses: next-token cross-entropy (masked for SFT) and knowledge distillation from a frozen teacher.

An objective is `objective(model, batch) -> scalar loss`; a batch is either the pretraining pair
(input_ids, labels) or the SFT dict {input_ids, labels, position_ids} (labels −100 where no loss is taken).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from megalang.config import DistillConfig
from megalang.errors import UserError
from megalang.train.loss import IGNORE, cross_entropy, lm_loss


def model_inputs(batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(forward kwargs, labels). SFT rows pass position ids and no cache: with no attention mask transformers
    then reads example boundaries off the position ids (a block-diagonal causal mask)."""
    if isinstance(batch, dict):
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}, batch["labels"]
    input_ids, labels = batch
    return {"input_ids": input_ids}, labels


def document_positions(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Position ids that restart at 0 after every EOS (documents end with one in token shards). With no attention
    mask, transformers reads document boundaries off them: a block-diagonal causal mask, as for packed SFT rows."""
    index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
    after_eos = torch.zeros_like(input_ids, dtype=torch.bool)
    after_eos[:, 1:] = input_ids[:, :-1] == eos_id
    return index - torch.where(after_eos, index, torch.zeros_like(index)).cummax(dim=1).values


class DocumentMasked:
    """`train.document_mask`: a pretraining batch (input_ids, labels) becomes the SFT form with position ids that
    restart after each EOS, so no token attends to another document; SFT and classifier batches pass unchanged."""

    def __init__(self, objective, eos_id: int):
        self.objective, self.eos_id = objective, eos_id

    def __call__(self, model, batch) -> torch.Tensor:
        if isinstance(batch, dict):
            return self.objective(model, batch)
        input_ids, labels = batch
        return self.objective(model, {"input_ids": input_ids, "labels": labels,
                                      "position_ids": document_positions(input_ids, self.eos_id)})


def document_eos(cfg, manifest: dict[str, Any]) -> int | None:
    """The EOS id that separates documents when train.document_mask is on (None when it is off, and for SFT rows
    and labelled examples, which carry their own boundaries)."""
    if not cfg.train.document_mask or manifest.get("format") in ("sft", "classify"):
        return None
    if manifest.get("eos_id") is None:
        raise UserError("train.document_mask needs the shards' tokenizer to have an EOS token (documents end with "
                        "it); this tokenizer has none: set train.document_mask=false")
    return int(manifest["eos_id"])


def next_token_loss(model, batch) -> torch.Tensor:
    kwargs, labels = model_inputs(batch)
    return cross_entropy(model(**kwargs).logits, labels)


def fused_next_token_loss(model, batch) -> torch.Tensor:
    """`next_token_loss` with the output layer and loss computed in token chunks (train/loss.py)."""
    kwargs, labels = model_inputs(batch)
    return lm_loss(model, labels, **kwargs)


def distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """Mean over target tokens of KL(teacher ‖ student), both softened by `temperature` (fp32)."""
    keep = labels.flatten() != IGNORE
    s = F.log_softmax(student_logits.float().flatten(0, 1)[keep] / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float().flatten(0, 1)[keep] / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


class DistillObjective:
    """loss = α·T²·KL(teacher‖student at T) + (1−α)·CE. The T² keeps the KL gradients' scale independent of T
    (Hinton et al. 2015). The teacher is frozen, in eval mode, and runs under no_grad on its own device."""

    def __init__(self, teacher, cfg: DistillConfig, device: torch.device):
        self.teacher, self.alpha, self.temperature = teacher, cfg.alpha, cfg.temperature
        self.device = next(teacher.parameters()).device
        self.student_device = device

    def __call__(self, model, batch) -> torch.Tensor:
        kwargs, labels = model_inputs(batch)
        logits = model(**kwargs).logits
        with torch.no_grad():
            teacher_kwargs = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
            teacher_logits = self.teacher(**teacher_kwargs).logits.to(logits.device)
        teacher_logits = teacher_logits[..., : logits.shape[-1]]  # padded teacher vocabularies (checked equal below)
        kl = distill_kl(logits, teacher_logits, labels, self.temperature)
        ce = cross_entropy(logits, labels)
        return self.alpha * self.temperature ** 2 * kl + (1 - self.alpha) * ce


def load_teacher(cfg: DistillConfig, device: torch.device):
    """The frozen teacher: a Hugging Face folder, a .gguf file or a run folder (via model/load.py)."""
    from megalang.model.load import load_model_for_inference

    if not cfg.teacher:
        raise UserError("loss.objective=distill needs distill.teacher=PATH (a Hugging Face folder, .gguf or run)")
    loaded = load_model_for_inference(Path(cfg.teacher), field="distill.teacher")
    teacher = loaded.model.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher, loaded.tokenizer


def check_same_vocabulary(teacher_tokenizer, student_vocab: dict[str, int] | None, student_size: int,
                          teacher_path: str) -> None:
    """Distillation compares distributions id by id, so both sides must mean the same token by each id."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    if student_vocab is not None and teacher_vocab != student_vocab:
        raise UserError(f"distill.teacher={teacher_path}: its tokenizer differs from the student's ({len(teacher_vocab)} "
                        f"vs {len(student_vocab)} tokens); distil only between models that share a vocabulary")
    if len(teacher_vocab) < student_size:
        raise UserError(f"distill.teacher={teacher_path}: its vocabulary has {len(teacher_vocab)} tokens, the data "
                        f"uses {student_size}; distil only between models that share a vocabulary")


def build_objective(cfg, manifest: dict[str, Any], device: torch.device):
    """The loss function the trainer calls per micro-batch (within documents under train.document_mask)."""
    objective = _objective(cfg, manifest, device)
    eos = document_eos(cfg, manifest)
    return objective if eos is None else DocumentMasked(objective, eos)


def _objective(cfg, manifest: dict[str, Any], device: torch.device):
    if manifest.get("format") == "classify":  # data.classify: class-weighted CE over the label words' scores
        from megalang.train.classifier import build_classify_objective

        return build_classify_objective(cfg, manifest)
    if cfg.loss.objective == "ce":
        return fused_next_token_loss if cfg.loss.fused else next_token_loss
    teacher, tokenizer = load_teacher(cfg.distill, device)
    check_same_vocabulary(tokenizer, student_vocabulary(manifest), manifest["vocab_size"], cfg.distill.teacher)
    return DistillObjective(teacher, cfg.distill, device)


def student_vocabulary(manifest: dict[str, Any]) -> dict[str, int] | None:
    """token → id of the tokenizer that made the training data (None if it cannot be read)."""
    path = Path(manifest.get("tokenizer_path") or "") / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)
