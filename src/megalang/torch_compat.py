"""Every reach into a private (underscore) API of torch or transformers, in one place.

Each entry says why the public API does not suffice. tests/test_torch_compat.py checks that each private name
still exists, one test per name, so a torch or transformers upgrade that removes one fails by that name instead
of somewhere deep inside a training run.
"""

from __future__ import annotations

import contextlib
from typing import Any

# Every private name used below; tests/test_torch_compat.py has one check per entry and fails if they differ.
PRIVATE_NAMES = (
    "torch.distributed.checkpoint._async_process_executor._CHECKPOINT_PROCESS",
    "torch.distributed.checkpoint._async_process_executor._AsyncCheckpointProcess._save_process",
    "torch.distributed.checkpoint.filesystem._StorageInfo",
    "torch.serialization._get_layout",
    "torch.distributed._composable.replicate",
    "torch.optim.lr_scheduler.LRScheduler._last_lr",
    "torch.nn.Module._forward_hooks",
    "torch.nn.Module._forward_pre_hooks",
    "torch.nn.Module._backward_hooks",
    "torch.nn.Module._compiled_call_impl",
    "transformers.modeling_layers.GradientCheckpointingLayer._gradient_checkpointing_func",  # read in its forward
    "torch.optim._muon._zeropower_via_newtonschulz",
    "torch.optim._muon._adjust_lr",
)


def stop_dcp_writer_process() -> None:
    """Stop DCP's checkpoint writer process. DCP keeps it for the life of the trainer process and offers no call
    to stop it; left to interpreter exit it dies on a closed pipe with a traceback. Stop it as DCP's own
    finalizer does, then reap it (after a SIGTERM too, and a SIGKILL if even that takes over 5 s)."""
    from torch.distributed.checkpoint import _async_process_executor as process_executor

    writer, process_executor._CHECKPOINT_PROCESS = process_executor._CHECKPOINT_PROCESS, None
    if writer is not None:
        with contextlib.suppress(OSError):  # a writer that already exited has closed its end of the pipe
            writer.__del__()  # TERMINATE, join (5 s), then SIGTERM; a second call at GC finds it stopped
        writer._save_process.join(timeout=5)
        if writer._save_process.is_alive():  # a loaded machine can outlast both waits: nothing is in flight here
            writer._save_process.kill()
            writer._save_process.join()


def dcp_writer_process() -> Any:
    """DCP's writer process object, or None when none is running (tests check it starts and stops)."""
    from torch.distributed.checkpoint import _async_process_executor as process_executor

    return process_executor._CHECKPOINT_PROCESS


def dcp_storage_info_type() -> type:
    """The class DCP pickles into `.metadata` for each file's byte range; the safe unpickler allows it by name."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    return _StorageInfo


def tensor_layout_getter() -> Any:
    """What pickled tensors call to turn "torch.strided" back into the layout object (DCP metadata uses it)."""
    import torch

    return torch.serialization._get_layout


def replicate(model, **kwargs) -> None:
    """Composable DDP: unlike DistributedDataParallel it keeps parameter names (no `module.` prefix), which
    checkpoints and the name-keyed optimizer state rely on. Public only under torch.distributed._composable."""
    from torch.distributed._composable.replicate import replicate as _replicate

    _replicate(model, **kwargs)


def set_last_lr(scheduler, lrs: list[float]) -> None:
    """LRScheduler.get_last_lr() reads `_last_lr`; after changing the LR of a resumed run in place, the scheduler
    must report the new one (there is no public setter)."""
    scheduler._last_lr = lrs


def has_hooks(module) -> bool:
    """Whether anything hooks `module` (Opacus, tensor parallel): nn.Module exposes no public query."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def is_compiled(module) -> bool:
    """Whether `module.compile()` was called on this module itself (tests check the compile scope)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def checkpoint_block(block, checkpoint_fn) -> None:
    """Turn on activation checkpointing for one transformers decoder block: the switch and the function its
    GradientCheckpointingLayer reads. Public only for the whole model (every block), not every k-th."""
    block.gradient_checkpointing = True
    block._gradient_checkpointing_func = checkpoint_fn


def muon_orthogonalize(update, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float):
    """torch.optim.Muon's Newton–Schulz orthogonalisation of one whole matrix (bf16, as torch's step does it).
    train/muon.py runs it on a matrix gathered from FSDP2 shards; torch has no public entry point for it, and
    calling the same function keeps a sharded run's update equal to one process's."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    return _zeropower_via_newtonschulz(update, ns_coefficients, ns_steps, eps)


def muon_adjusted_lr(lr: float, adjust_lr_fn: str | None, shape) -> float:
    """torch.optim.Muon's per-matrix learning-rate scale (`original` or `match_rms_adamw`) for a matrix's global
    shape, for the same reason as `muon_orthogonalize`."""
    from torch.optim._muon import _adjust_lr

    return _adjust_lr(lr, adjust_lr_fn, shape)
