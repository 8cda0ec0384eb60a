"""train/optim.py: AdamW parameter groups and the warmup + cosine schedule."""

import math

import pytest
import torch

from megalang.config import ModelConfig, OptimizerConfig, RunConfig, ScheduleConfig, TrainSection
from megalang.model.build import build_model
from megalang.train.optim import build_optimizer, build_scheduler, lr_factor


def test_weight_decay_only_on_matrices():
    model = build_model(ModelConfig(preset="debug"), 100, 16, {}, 0)
    opt = build_optimizer(model, OptimizerConfig(weight_decay=0.1, beta1=0.8, beta2=0.9, eps=1e-6))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert decay["betas"] == (0.8, 0.9) and decay["eps"] == 1e-6
    assert decay["fused"] is True  # the fused kernel exists on CPU too, and is the fastest there


def schedule(lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> RunConfig:
    return RunConfig(optimizer=OptimizerConfig(lr=lr), schedule=ScheduleConfig(min_lr=min_lr, warmup_steps=warmup_steps),
                     train=TrainSection(max_steps=max_steps))


def lrs(cfg: RunConfig, steps: int) -> list[float]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    sched = build_scheduler(opt, cfg)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_to_min_lr():
    cfg = schedule(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=110)
    got = lrs(cfg, 111)
    assert got[0] == pytest.approx(1e-4)  # first step: lr/warmup, not 0
    assert got[9] == pytest.approx(1e-3)  # warmup ends at the full rate
    assert got[10] == pytest.approx(1e-3)  # cosine starts at lr
    assert got[60] == pytest.approx(5.5e-4)  # halfway: (lr + min_lr) / 2
    assert got[110] == pytest.approx(1e-4)  # max_steps: min_lr
    assert all(a >= b for a, b in zip(got[10:], got[11:]))


def test_no_warmup_and_past_the_end():
    cfg = schedule(lr=1.0, min_lr=0.0, warmup_steps=0, max_steps=4)
    assert [lr_factor(s, cfg) for s in range(6)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0, 0.0]
    )


def test_warmup_stable_decay():
    """schedule.shape=wsd: warmup, the peak held, then a straight line to min_lr over the last decay_fraction."""
    cfg = RunConfig(optimizer=OptimizerConfig(lr=1e-3),
                    schedule=ScheduleConfig(shape="wsd", min_lr=1e-4, warmup_steps=10, decay_fraction=0.25),
                    train=TrainSection(max_steps=100))
    got = lrs(cfg, 102)
    assert got[0] == pytest.approx(1e-4) and got[9] == pytest.approx(1e-3)
    assert got[10:76] == pytest.approx([1e-3] * 66)  # stable until the decay starts at step 75
    assert got[85] == pytest.approx(1e-3 - 0.4 * 9e-4)  # 10 of 25 decay steps: 40 % of the way down
    assert got[100] == got[101] == pytest.approx(1e-4)  # max_steps and after: min_lr
    assert all(a >= b for a, b in zip(got[10:], got[11:]))
    # A decay longer than what follows warmup starts when warmup ends.
    short = cfg.model_copy(update={"schedule": ScheduleConfig(shape="wsd", min_lr=0.0, warmup_steps=10,
                                                              decay_fraction=1.0)})
    assert [lr_factor(s, short) for s in (9, 10, 55, 100)] == pytest.approx([1.0, 1.0, 0.5, 0.0])
