"""torch_compat.py: one check per private torch / transformers name megalang reaches into, named after it, so an
upgrade that removes one fails here by name. Instance attributes are checked on a real instance, or in the
source of the code that reads them."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from megalang import torch_compat


def attribute_of(path: str):
    """`a.b.C.d`: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def source_of(path: str) -> str:
    return inspect.getsource(attribute_of(path))


def module_with_hooks():
    return torch.nn.Linear(2, 2, bias=False)


def lr_scheduler():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


CHECKS = {
    "torch.distributed.checkpoint._async_process_executor._CHECKPOINT_PROCESS":
        lambda: hasattr(importlib.import_module("torch.distributed.checkpoint._async_process_executor"), "_CHECKPOINT_PROCESS"),
    "torch.distributed.checkpoint._async_process_executor._AsyncCheckpointProcess._save_process":
        lambda: "self._save_process" in source_of("torch.distributed.checkpoint._async_process_executor._AsyncCheckpointProcess"),
    "torch.distributed.checkpoint.filesystem._StorageInfo": lambda: isinstance(torch_compat.dcp_storage_info_type(), type),
    "torch.serialization._get_layout": lambda: torch_compat.tensor_layout_getter()("torch.strided") is torch.strided,
    "torch.distributed._composable.replicate": lambda: callable(attribute_of("torch.distributed._composable.replicate.replicate")),
    "torch.optim.lr_scheduler.LRScheduler._last_lr": lambda: lr_scheduler()._last_lr == lr_scheduler().get_last_lr(),
    "torch.nn.Module._forward_hooks": lambda: hasattr(module_with_hooks(), "_forward_hooks"),
    "torch.nn.Module._forward_pre_hooks": lambda: hasattr(module_with_hooks(), "_forward_pre_hooks"),
    "torch.nn.Module._backward_hooks": lambda: hasattr(module_with_hooks(), "_backward_hooks"),
    "torch.nn.Module._compiled_call_impl": lambda: "_compiled_call_impl" in source_of("torch.nn.Module.compile"),
    "transformers.modeling_layers.GradientCheckpointingLayer._gradient_checkpointing_func":
        lambda: "self._gradient_checkpointing_func(" in source_of("transformers.modeling_layers.GradientCheckpointingLayer"),
    "torch.optim._muon._zeropower_via_newtonschulz":
        lambda: torch_compat.muon_orthogonalize(torch.eye(2), (3.4445, -4.775, 2.0315), 5, 1e-7).shape == (2, 2),
    "torch.optim._muon._adjust_lr": lambda: torch_compat.muon_adjusted_lr(1.0, "original", (8, 2)) == 2.0,
}


def test_every_private_name_has_a_check():
    assert set(CHECKS) == set(torch_compat.PRIVATE_NAMES)


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_private_name_still_exists(name):
    assert CHECKS[name](), f"{name} is gone or changed: update megalang/torch_compat.py for this torch/transformers"


def test_has_hooks_and_set_last_lr_behave():
    head = module_with_hooks()
    assert not torch_compat.has_hooks(head)
    handle = head.register_forward_hook(lambda *a: None)
    assert torch_compat.has_hooks(head)
    handle.remove()
    scheduler = lr_scheduler()
    torch_compat.set_last_lr(scheduler, [0.5])
    assert scheduler.get_last_lr() == [0.5]
