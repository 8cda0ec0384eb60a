"""A site's local training: one megalang run (train/setup.py, train/trainer.py) advanced `local_steps` at a time
between rounds, its weights replaced by the global ones before each round.

The site's global weights are `base + D`: `base` is its trainable weights before round 1 (saved once to
RUN/federated-base.safetensors, so a restarted site finds it again) and `D` the federation's accumulated mean
update the server sends. Every site of one federation starts from the same base (same recipe, same seed); the
server refuses an update whose base differs. When the server sends a round's global weights for evaluation
(every `federated.evaluate_every` rounds and after the last), the site checkpoints them, so `megalang export --run
RUN` releases the federation's model and a restarted site resumes from it.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.federated.updates import Layout, concat, layout_of, split
from megalang.monitor.progress import make_reporter
from megalang.store.files import sha256_file
from megalang.train.faults import FaultPlan
from megalang.train.setup import deterministic_kernels, setup
from megalang.train.summary import finish
from megalang.train.trainer import save_checkpoint, train_step


@dataclass
class LocalRound:
    """What one round of local training produced."""

    update: np.ndarray  # trained − global, float64, flat in layout order
    loss: float  # mean training loss over the round's steps
    steps: int
    seconds: float


class LocalTrainer:
    """The site's run, built once (model, data, optimizer, objective, DP-SGD if configured) and kept across rounds."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.started = time.perf_counter()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(deterministic_kernels(cfg.train.deterministic))
        self.t = setup(cfg, FaultPlan.from_env())
        self._stack.callback(self._close_trainer)
        self.params = [p for _, p in self.t.model.named_parameters() if p.requires_grad]
        self.layout: Layout = layout_of([(n, p) for n, p in self.t.model.named_parameters() if p.requires_grad])
        self.base = self._load_or_save_base()
        self.base_sha256 = sha256_file(self.t.run.federated_base)
        self.report = self._stack.enter_context(make_reporter(cfg.train.max_steps, self.t.step, cfg.train.progress))
        self._losses: list[torch.Tensor] = []
        self._anchor: list[torch.Tensor] | None = None
        self._mu = 0.0
        self._objective = self.t.objective
        self.t.objective = self._round_objective

    # --- weights ------------------------------------------------------------------------------------------

    def weights(self) -> np.ndarray:
        return concat([p.detach().to("cpu", torch.float64).numpy() for p in self.params])

    def load(self, flat: np.ndarray) -> None:
        with torch.no_grad():
            for p, value in zip(self.params, split(flat, self.layout)):
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.dtype))

    def global_weights(self, accumulated: np.ndarray | None) -> np.ndarray:
        return self.base if accumulated is None else self.base + accumulated

    def _load_or_save_base(self) -> np.ndarray:
        path = self.t.run.federated_base
        if path.is_file():
            tensors = load_file(str(path))
            arrays = [tensors.get(name) for name, _ in self.layout]
            mismatched = any(a is None or a.shape != shape for a, (_, shape) in zip(arrays, self.layout))
            if mismatched or len(tensors) != len(self.layout):
                raise UserError(f"{path}: its tensors do not match this recipe's trainable weights (lora.* or model.* "
                                "changed): use a new run.dir for this site")
            return concat(arrays)
        if self.t.step:
            raise UserError(f"{path} is missing although {self.t.run_dir} has trained {self.t.step} steps: this "
                            "run was not a federated site; use a new run.dir")
        base = self.weights()
        tmp = path.with_name(path.name + ".tmp")
        save_file({name: array.astype(np.float32) for (name, _), array in zip(self.layout, split(base, self.layout))},
                  str(tmp))
        tmp.replace(path)
        return concat([a.astype(np.float32) for a in split(base, self.layout)])

    # --- a round ------------------------------------------------------------------------------------------

    def _round_objective(self, model, batch) -> torch.Tensor:
        loss = self._objective(model, batch)
        self._losses.append(loss.detach())
        if self._anchor is not None:  # FedProx: μ/2·‖w − w_global‖² keeps local weights near the global ones
            prox = sum(((p - a) ** 2).sum() for p, a in zip(self.params, self._anchor))
            loss = loss + 0.5 * self._mu * prox
        return loss

    def fit(self, accumulated: np.ndarray | None, steps: int, proximal_mu: float = 0.0) -> LocalRound:
        """Load the global weights, train `steps` optimizer steps, return the update."""
        if self.t.step + steps > self.cfg.train.max_steps:
            raise UserError(f"{self.t.run_dir}: {self.t.step} of {self.cfg.train.max_steps} steps (federated.rounds × "
                            f"federated.local_steps) done, {steps} more asked: this site trained rounds the "
                            "federation did not keep; start it with a new run.dir")
        started = time.perf_counter()
        start = self.global_weights(accumulated)
        self.load(start)
        self._mu = proximal_mu
        self._anchor = [p.detach().clone() for p in self.params] if proximal_mu > 0 else None
        self._losses = []
        try:
            for _ in range(steps):
                train_step(self.t, self.report, hooks=False)
        finally:
            self._anchor = None
        loss = torch.stack(self._losses).mean().item() if self._losses else float("nan")
        return LocalRound(self.weights() - start, loss, steps, time.perf_counter() - started)

    def adopt(self, accumulated: np.ndarray | None) -> float | None:
        """Make the round's global weights this run's: load them, checkpoint them, return the held-out loss (None
        without a val split)."""
        self.load(self.global_weights(accumulated))
        save_checkpoint(self.t)
        if self.t.val_split is None:
            return None
        result = self.t.validate(self.t)
        return result.get("val_loss") if isinstance(result, dict) else result

    @property
    def examples(self) -> int:
        """FedAvg's weight: the site's training examples (SFT chats; otherwise token windows)."""
        stats = self.t.finetune.sft_stats if self.t.finetune is not None else None
        return int(stats.examples) if stats is not None else int(self.t.loader.num_samples)

    def epsilon(self) -> float | None:
        """ε spent by DP-SGD inside this site (privacy.target_epsilon), when it trains with Opacus."""
        ft = self.t.finetune
        return ft.metrics().get("epsilon") if ft is not None and ft.privacy else None

    # --- the end ------------------------------------------------------------------------------------------

    def finish(self) -> dict:
        """summary.json and the run's manifest: the site's folder is then a complete run `megalang export` reads."""
        return finish(self.t, time.perf_counter() - self.started)

    def _close_trainer(self) -> None:
        self.t.checkpointer.close()
        self.t.sink.close()
        self.t.group.close()

    def close(self) -> None:
        self._stack.close()
