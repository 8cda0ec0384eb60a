"""The held-out loss of a pretraining run: token-mean cross-entropy over fixed val windows, per data rank, summed over the world."""

from __future__ import annotations

import torch

from megalang.data.loader import eval_batches
from megalang.parallel.distributed import (
    world_mean,
)
from megalang.train.loss import lm_loss
from megalang.train.objectives import document_positions
from megalang.train.state import Trainer


@torch.no_grad()
def evaluate_lm_loss(t: Trainer) -> float | None:
    """Token-mean cross-entropy over the fixed val windows: each data rank scores its share, then the sums
    and counts are added over the world (tensor-parallel ranks count their replica's share once each, which
    divides out)."""
    t.model.eval()
    # A pipeline scores val batches in groups of `accum` micro-batches: ask for at least one group.
    wanted = t.cfg.train.eval_batches if t.schedule is None else max(t.cfg.train.eval_batches, t.accum)
    batches = eval_batches(t.val_split, t.cfg.train.seq_len, t.cfg.train.micro_batch_size, wanted,
                           t.loader.rank, t.loader.world)
    if t.schedule is not None:
        total, count = evaluate_pipelined(t, batches)
    else:
        total, count = torch.zeros((), device=t.device, dtype=torch.float64), 0
        for input_ids, labels in batches:
            input_ids, labels = input_ids.to(t.device), labels.to(t.device)
            masked = {} if t.document_eos is None else {  # train.document_mask: scored as trained
                "position_ids": document_positions(input_ids, t.document_eos), "use_cache": False}
            with t.autocast():
                total += lm_loss(t.model, labels, reduction="sum", input_ids=input_ids, **masked)
            count += labels.numel()
    t.model.train()
    if t.dims is not None:
        pair = world_mean(torch.stack([total, torch.tensor(float(count), dtype=torch.float64, device=t.device)]), 1)
        total, count = pair[0], pair[1].item()
    return total.item() / count if count else None  # too few val windows for one pipeline group: no val loss


def evaluate_pipelined(t: Trainer, batches) -> tuple[torch.Tensor, int]:
    """(CE sum, token count) through the pipeline's forward-only schedule. The stages' buffers are sized for
    the training microbatch, so val batches go in groups of `accum` full micro-batches (a short tail is
    left out). Only the last stage holds losses; other stages return zeros and add nothing."""
    total, count = torch.zeros((), device=t.device, dtype=torch.float64), 0
    full = [b for b in batches if len(b[0]) == t.cfg.train.micro_batch_size]
    for i in range(0, len(full) - t.accum + 1, t.accum):
        group = full[i:i + t.accum]
        input_ids, labels = torch.cat([b[0] for b in group]).to(t.device), torch.cat([b[1] for b in group]).to(t.device)
        losses: list[torch.Tensor] = []
        kwargs = {"target": labels, "losses": losses} if t.last_stage else {}
        with t.autocast():
            t.schedule.eval(*([input_ids] if t.first_stage else []), **kwargs)
        if t.last_stage:  # equal-size microbatches: the token sum is the mean loss times the tokens
            total += torch.stack(losses).double().mean() * labels.numel()
            count += labels.numel()
    return total, count


