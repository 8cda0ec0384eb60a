"""DP-SGD through Opacus: per-example gradient clipping, Gaussian noise calibrated to a target (ε, δ) over the
planned steps, and the accountant that reports the ε actually spent.

The model keeps its identity (checkpoints and export see the same module): Opacus's GradSampleModule only
installs the hooks that record per-example gradients, and the trainer's optimizer is wrapped in a DPOptimizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from megalang.config import RunConfig
from megalang.errors import UserError


def check_privacy(cfg: RunConfig, accum: int, world: int) -> None:
    """Settings DP-SGD cannot honour, refused before anything is built."""
    if cfg.privacy.target_epsilon is None:
        return
    problems = []
    if cfg.data.packing and (cfg.data.sft or cfg.data.shards):
        # Clipping bounds one *example's* influence; a row mixing several users' examples would be one "example".
        problems.append("data.packing=true puts several examples (possibly of different users) into one row; set "
                        "data.packing=false so each row is one example")
    if accum != 1:
        problems.append("gradient accumulation is not supported with DP; leave train.global_batch_tokens unset")
    if world != 1:
        problems.append("DP training runs on one process")
    if cfg.loss.objective != "ce":
        problems.append("loss.objective=distill is not supported with privacy")
    if problems:
        raise UserError("privacy.target_epsilon is set but " + "; ".join(problems))


def dataset_size(loader) -> int:
    """Examples one epoch holds: with packing off, each row is one example."""
    return loader.num_samples


@dataclass
class PrivacyState:
    """What the run needs after wrapping: the accountant (ε spent so far) and the noise it calibrated."""

    accountant: Any
    grad_sample_module: Any  # kept alive: its hooks record per-example gradients
    noise_multiplier: float
    sample_rate: float
    delta: float

    def epsilon(self) -> float:
        return self.accountant.get_epsilon(delta=self.delta) if self.accountant.history else 0.0

    def metrics(self) -> dict[str, float]:
        return {"epsilon": round(self.epsilon(), 2)}

    def summary(self) -> dict[str, Any]:
        return {"epsilon": round(self.epsilon(), 2), "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate}


def make_private(model, optimizer, cfg: RunConfig, num_examples: int, batch_size: int, steps: int):
    """(DPOptimizer, PrivacyState): noise for the target ε after `steps` steps of `batch_size` of `num_examples`.

    The accountant treats each step as a Poisson sample at rate batch/examples; our loader draws fixed-size
    batches from a shuffled order instead, the usual approximation (as Opacus does without Poisson sampling).
    """
    from opacus import GradSampleModule
    from opacus.accountants import create_accountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

    pc = cfg.privacy
    if pc.delta >= 1 / max(num_examples, 1):
        raise UserError(f"privacy.delta={pc.delta} is not below 1/examples (1/{num_examples}); lower it")
    sample_rate = batch_size / num_examples
    if sample_rate > 1:
        raise UserError(f"train.micro_batch_size={batch_size} exceeds the {num_examples} examples; lower it")
    noise = get_noise_multiplier(target_epsilon=pc.target_epsilon, target_delta=pc.delta, sample_rate=sample_rate,
                                 steps=steps, accountant=pc.accountant)
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    dp_optimizer = DPOptimizer(optimizer, noise_multiplier=noise, max_grad_norm=pc.max_grad_norm,
                               expected_batch_size=batch_size, loss_reduction="mean")
    accountant = create_accountant(pc.accountant)
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    return dp_optimizer, PrivacyState(accountant, gsm, noise, sample_rate, pc.delta)


def maybe_make_private(model, optimizer: torch.optim.Optimizer, cfg: RunConfig, loader):
    """The optimizer to train with and the privacy state (None without privacy.target_epsilon)."""
    if cfg.privacy.target_epsilon is None:
        return optimizer, None
    return make_private(model, optimizer, cfg, dataset_size(loader), cfg.train.micro_batch_size, cfg.train.max_steps)
