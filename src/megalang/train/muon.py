"""Muon for the decoder blocks' 2-D weight matrices and AdamW for the rest (`train.optimizer=muon`), held in one
`OptimizerPair` that the trainer, the LR scheduler, gradient clipping and DCP checkpoints treat as one optimizer.

Muon (Keller Jordan 2024, https://kellerjordan.github.io/posts/muon/) orthogonalises each matrix's momentum with
a quintic Newton–Schulz iteration; PyTorch ships it as `torch.optim.Muon`. Its step needs the whole matrix, and
under FSDP2 a parameter is a DTensor sharded on dim 0: `Muon.step` below gathers the momentum-mixed gradient
(`full_tensor()`), runs PyTorch's own Newton–Schulz on it and applies this rank's rows of the result. Every rank
orthogonalises every matrix (redundant compute, one all-gather per matrix and step); torchtitan's distributed Muon
instead splits the matrices between ranks, which pays off once the Newton–Schulz time is a visible share of a step.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from megalang.config import OptimizerConfig
from megalang.torch_compat import muon_adjusted_lr, muon_orthogonalize


class Muon(torch.optim.Muon):
    """torch.optim.Muon whose step also takes DTensor (FSDP2-sharded) matrices; plain tensors take PyTorch's own
    step unchanged. The arithmetic is torch's `_single_tensor_muon`, with the gather around the orthogonalisation."""

    @torch.no_grad()
    def step(self, closure=None):
        if not any(isinstance(p, DTensor) for group in self.param_groups for p in group["params"]):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
        buf, momentum = state["momentum_buffer"], group["momentum"]
        buf.lerp_(p.grad, 1 - momentum)  # elementwise: each rank its own rows
        update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
        full = update.full_tensor() if isinstance(update, DTensor) else update
        ortho = muon_orthogonalize(full, group["ns_coefficients"], group["ns_steps"], group["eps"])
        if isinstance(p, DTensor):  # this rank's shard of the whole update: slicing, no communication
            ortho = distribute_tensor(ortho, p.device_mesh, p.placements, src_data_rank=None)
        lr = group["lr"]
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(ortho, alpha=-muon_adjusted_lr(lr, group["adjust_lr_fn"], p.shape))


class OptimizerPair(torch.optim.Optimizer):
    """Several optimizers over disjoint parameters, seen as one (torchtitan's OptimizersContainer, simplified):
    `param_groups` is their groups, the same dicts (a scheduler setting `lr` sets it in the real optimizer),
    `state` their merged state, and `state_dict`/`load_state_dict` the standard form over the groups in that
    order, which is what DCP's `get_state_dict`/`set_state_dict` read and write (keyed by parameter name).

    Both are read through on every access: `Optimizer.load_state_dict` replaces an optimizer's group dicts, and a
    list captured before a resume would leave the scheduler setting the LR of dicts no optimizer reads."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers: list[torch.optim.Optimizer] = []  # empty while Optimizer.__init__ checks the params
        params = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        super().__init__(params, {})  # the hooks and profiling wrappers torch.optim.Optimizer sets up
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    @param_groups.setter
    def param_groups(self, _value) -> None:
        pass  # Optimizer.__init__ assigns its own list; the real groups live in self.optimizers

    @property
    def state(self) -> dict[torch.Tensor, dict[str, Any]]:  # a merged view; each optimizer keeps its own
        return defaultdict(dict, {p: s for opt in self.optimizers for p, s in opt.state.items()})

    @state.setter
    def state(self, _value) -> None:
        pass  # as param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Each optimizer takes its own groups (in order) and the states of their parameters."""
        groups, start = state_dict["param_groups"], 0
        for opt in self.optimizers:
            mine = groups[start:start + len(opt.param_groups)]
            start += len(opt.param_groups)
            ids = {i for group in mine for i in group["params"]}
            opt.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i in ids},
                                 "param_groups": mine})


def is_muon_group(group: dict[str, Any]) -> bool:
    return "ns_steps" in group


def split_params(model: torch.nn.Module) -> tuple[list[tuple[str, torch.nn.Parameter]], list[tuple[str, torch.nn.Parameter]]]:
    """(Muon's, AdamW's) trainable (name, parameter) pairs: Muon takes the 2-D matrices except the input
    embedding and the output layer (Muon's authors keep those on AdamW: an embedding row is updated only by its
    own token, and the head's rows are per-token too); AdamW takes those, norms and biases."""
    special = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        layer = getattr(model, get)() if hasattr(model, get) else None
        if layer is not None and getattr(layer, "weight", None) is not None:
            special.add(id(layer.weight))
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (muon if p.ndim == 2 and id(p) not in special else adamw).append((name, p))
    return muon, adamw


def build_muon(model: torch.nn.Module, opt: OptimizerConfig, adamw) -> OptimizerPair:
    """AdamW (built by `adamw(params)`, train/optim.py) for what Muon does not take, then Muon: group 0 is AdamW's
    decayed group, so the logged `lr` stays optimizer.lr on its schedule."""
    muon_params, adamw_params = split_params(model)
    muon = Muon([p for _, p in muon_params], lr=opt.muon_peak_lr(), weight_decay=opt.muon_decay(),
                momentum=opt.muon_momentum, nesterov=True, ns_steps=opt.muon_ns_steps,
                adjust_lr_fn=opt.muon_adjust_lr)
    return OptimizerPair([adamw([p for _, p in adamw_params]), muon])
