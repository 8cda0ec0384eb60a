"""The classifier objective (`data.classify`): class-weighted cross-entropy over the label words' scores, and its
val metrics (val_loss, val_accuracy, val_macro_f1).

A label's score is the summed log-likelihood of its verbaliser word after the prompt, the number `megalang eval
classify` ranks labels by; the loss is the cross-entropy of the softmax restricted to those K scores, so the
model stays a plain causal LM that eval, export and generate handle unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from megalang.evaluate.classify import classification_metrics
from megalang.train.classifier_data import IGNORE, class_weights


def label_scores(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, K]: log p(label k's word | prompt b), summed over the word's tokens (fp32). Only the scored positions'
    logits go through the log-softmax."""
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], use_cache=False).logits
    keep = labels != IGNORE
    logp = torch.log_softmax(logits[keep].float(), dim=-1).gather(-1, labels[keep][:, None])[:, 0]
    rows = torch.arange(labels.shape[0], device=labels.device)[:, None].expand_as(labels)[keep]
    per_row = torch.zeros(labels.shape[0], dtype=torch.float32, device=logp.device).index_add(0, rows, logp)
    return per_row.view(len(batch["target"]), -1)


def weighted_loss(scores: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  reduction: str = "mean") -> torch.Tensor:
    """Σ_b w[y_b] · −log softmax(scores_b)[y_b], divided by Σ_b w[y_b] for the mean (PyTorch's weighted mean:
    with every weight 1 the plain mean over examples)."""
    return F.cross_entropy(scores, target, weight=weight.to(scores.device), reduction=reduction)


class ClassifyObjective:
    """objective(model, batch) → the class-weighted restricted cross-entropy of one micro-batch."""

    def __init__(self, weights: list[float]):
        self.weight = torch.tensor(weights, dtype=torch.float32)

    def __call__(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return weighted_loss(label_scores(model, batch), batch["target"], self.weight)


def build_classify_objective(cfg, manifest: dict[str, Any]) -> ClassifyObjective:
    return ClassifyObjective(class_weights(cfg.data.class_weights, manifest["train_counts"]))


@torch.no_grad()
def evaluate_classifier(t) -> dict[str, float]:
    """val_loss (the training objective, class weights included), val_accuracy and val_macro_f1 (the first
    highest-scoring label is the prediction, as eval classify picks it) over up to train.eval_batches
    micro-batches of the val examples."""
    weight = t.objective.weight
    t.model.eval()
    gold: list[int] = []
    pred: list[int] = []
    total = torch.zeros(2, dtype=torch.float64)  # (weighted loss sum, weight sum)
    for batch in t.val_split.batches(t.cfg.train.eval_batches):
        batch = {k: v.to(t.device) for k, v in batch.items()}
        with t.autocast():
            scores = label_scores(t.model, batch)
        total[0] += weighted_loss(scores, batch["target"], weight, reduction="sum").item()
        total[1] += weight[batch["target"].cpu()].sum().item()
        gold += batch["target"].tolist()
        pred += scores.argmax(dim=-1).tolist()
    t.model.train()
    metrics = classification_metrics(gold, pred, t.val_split.labels)
    return {"val_loss": (total[0] / total[1]).item(), "val_accuracy": metrics["accuracy"],
            "val_macro_f1": metrics["macro_f1"]}


def classify_notes(cfg, manifest: dict[str, Any]) -> dict[str, Any]:
    """summary.json's `classify`: the verbaliser, the class weights used, the label counts per split."""
    counts = manifest["train_counts"]
    weights = class_weights(cfg.data.class_weights, counts)
    return {"labels": dict(zip(manifest["labels"], manifest["words"])), "template": cfg.data.classify_template,
            "class_weights": dict(zip(counts, weights)), "train_counts": counts, "val_counts": manifest["val_counts"]}
