"""Loading files a user hands us without running code from them (docs/reliability.md, "Safe loading").

A pickle can execute anything when it is read. megalang therefore reads weights only as safetensors (Hugging
Face folders) or as DCP checkpoints read through a restricted unpickler, and every `torch.load` passes
`weights_only=True` with no fallback.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from megalang.errors import UserError
from megalang.torch_compat import dcp_storage_info_type, tensor_layout_getter

# Weight files that are pickles: `torch.load` / `pickle.load` would run whatever they contain.
_PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def require_safetensors(folder: str | os.PathLike, field: str) -> None:
    """Refuse a Hugging Face folder whose weights are only pickles (`pytorch_model.bin` …), naming the field.

    transformers would load such a folder (with weights_only=True in v5), but a pickle is still code-bearing
    input and an exported folder is always safetensors, so the rule stays one simple sentence: safetensors only.
    Called before `from_pretrained(..., use_safetensors=True)`, whose own error for this case is a hub message.
    """
    folder = Path(folder)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in _PICKLE_WEIGHTS for p in folder.glob(pattern))
    found = f"only pickle weights ({', '.join(pickles)})" if pickles else "no model.safetensors"
    raise UserError(
        f"{field}={folder}: {found}; megalang loads safetensors only: convert the folder in a trusted environment "
        "(model.save_pretrained(DIR, safe_serialization=True)) and pass that folder"
    )


# --- DCP checkpoints ---------------------------------------------------------------------------------

# DCP writes `.metadata` with plain pickle and reads it back with `pickle.load`, so a crafted checkpoint folder
# (a run a user downloads and evaluates, exports or distils from) could run code. These are the only globals
# a DCP metadata file holds (torch 2.6–2.13); anything else is refused.
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_DCP_STORAGE_INFO = ("torch.distributed.checkpoint.filesystem", "_StorageInfo")
_PATH_CLASSES = {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath", "Path", "PurePath"}


class _MetadataUnpickler(pickle.Unpickler):
    """The "restricting globals" pattern of the pickle docs: only DCP's plain data classes, torch dtypes/sizes/
    layouts and paths may be named; anything else (os.system, builtins.eval, …) is an error before it runs."""

    def find_class(self, module: str, name: str) -> Any:
        if module == _DCP_METADATA:
            import dataclasses
            import enum

            obj = getattr(__import__(module, fromlist=[name]), name, None)
            # Only the module's own dataclasses and enums: constructing them runs no code of consequence.
            if isinstance(obj, type) and obj.__module__ == module and (
                    dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
                return obj
        elif (module, name) == _DCP_STORAGE_INFO:
            return dcp_storage_info_type()
        elif module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)):
            return getattr(torch, name)
        elif module == "torch.serialization" and name == "_get_layout":
            return tensor_layout_getter()  # maps "torch.strided" to the layout object, nothing else
        elif module == "pathlib" and name in _PATH_CLASSES:
            import pathlib

            return getattr(pathlib, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a checkpoint")


def _reader_class():
    from torch.distributed.checkpoint import FileSystemReader

    class SafeFileSystemReader(FileSystemReader):
        """DCP's file reader with `.metadata` read through `_MetadataUnpickler` instead of `pickle.load`."""

        def read_metadata(self, *args: Any, **kwargs: Any):
            from torch.distributed.checkpoint.metadata import StorageMeta

            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as f:  # a missing file: DCP expects FileNotFoundError
                try:
                    metadata = _MetadataUnpickler(f).load()
                except Exception as e:  # a crafted or damaged file; pickle raises many different types
                    raise UserError(f"{path}: refused to load checkpoint metadata ({type(e).__name__}: {e}); "
                                    "the checkpoint is damaged or not from megalang") from None
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader


def _planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafeLoadPlanner(DefaultLoadPlanner):
        """DCP's default planner, except that non-tensor values (optimizer hyperparameters) are read with
        `torch.load(weights_only=True)`; upstream reads them with weights_only=False."""

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            try:
                loaded = torch.load(value, weights_only=True)
            except pickle.UnpicklingError as e:
                raise UserError(f"refused a value in the checkpoint ({read_item.dest_index.fqn}): "
                                f"{str(e).splitlines()[0]}") from None
            # Hand the checked value to the upstream code path (which re-reads it): upstream's nesting logic
            # stays in one place, and what it unpickles is now plain data written by us.
            value = io.BytesIO()
            torch.save(loaded, value)
            value.seek(0)
            super().load_bytes(read_item, value)

    return SafeLoadPlanner()


def load_dcp(state: dict[str, Any], path: str | os.PathLike) -> None:
    """`dcp.load(state, checkpoint_id=path)` that never unpickles arbitrary objects from the checkpoint, and
    reports a damaged or crafted checkpoint as a UserError naming it (DCP wraps every failure per rank)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    reader = _reader_class()(path)
    try:
        reader.read_metadata()  # read first, so a refusal is our one-line error rather than DCP's wrapped one
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint metadata (.metadata) missing; the checkpoint is damaged, "
                        "use another step or retrain") from None
    try:
        dcp.load(state, storage_reader=reader, planner=_planner())
    except CheckpointException as e:
        causes = [failure[0] for failure in e.failures.values()]
        for cause in causes:
            if isinstance(cause, UserError):
                raise UserError(f"{path}: {cause}") from None
        first = causes[0] if causes else e
        detail = (str(first).strip().splitlines() or [""])[-1][:300]
        cause = f"{type(first).__name__}: {detail}" if detail else type(first).__name__
        raise UserError(f"{path}: cannot load this checkpoint ({cause}); it is damaged or does not match the model "
                        "(`megalang verify` the run; use another step or retrain)") from None


@contextlib.contextmanager
def quiet_dcp():
    """DCP warns on every call without a process group; one process is a supported, intended case here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield
