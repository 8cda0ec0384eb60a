"""What the benches need to know about CUDA: the skip line of a GPU-only bench on a machine without it, and the
device sync before a clock is read. Imported by the bench scripts, which run with bench/ first on sys.path.
"""

from __future__ import annotations

import json
import sys

import torch


def skip_without_cuda(bench: str) -> None:
    """A GPU-only bench on a machine without CUDA: one JSON line saying so and exit 0, so `make bench` goes on."""
    if not torch.cuda.is_available():
        print(json.dumps({"bench": bench, "skipped": "no CUDA device"}))
        sys.exit(0)


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it times finished steps (a no-op on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
