"""GPU tests (issue #17): each CUDA path megalang has, run once on a real GPU — `pytest -m gpu tests/gpu`, which
bench/gpu_check.sh runs on a device machine.

Without CUDA every test here skips, so `make test` passes over them in a second. MEGALANG_GPU_TESTS_ON_CPU=1 runs
the tests' own logic on the CPU instead (bf16 stands in for fp16; the tests that need CUDA itself — NVML, QLoRA —
still skip): a change to these tests is checked there before device time is spent on it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ON_CPU = os.environ.get("MEGALANG_GPU_TESTS_ON_CPU") == "1"


@pytest.fixture(scope="session")
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if ON_CPU:
        return "cpu"
    pytest.skip("no CUDA device (MEGALANG_GPU_TESTS_ON_CPU=1 dry-runs these tests on the CPU)")


@pytest.fixture(scope="session")
def cuda() -> str:
    """For the tests that need CUDA itself (NVML, bitsandbytes): never dry-run on a CPU."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return "cuda"


@pytest.fixture(scope="session")
def gpu_shards(tmp_path_factory) -> Path:
    """The trainer tests' counting corpus (tests/train/conftest.py): a loss that falls within a few steps."""
    from train.conftest import make_shards, make_tokenizer

    root = tmp_path_factory.mktemp("gpu-data")
    return make_shards(root / "shards", make_tokenizer(root / "tok"))
