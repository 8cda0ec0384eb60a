"""Initial weights of sharded and pipelined models equal the single process's for the same seed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dist.init_worker import LAYOUTS, SEED, SEQ, VOCAB
from megalang.config import ModelConfig
from megalang.model.build import build_model

pytestmark = [pytest.mark.dist, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def rank_weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("init")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(Path(__file__).with_name("init_worker.py")), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_initial_weights_equal_single_process(layout, rank_weights):
    single = build_model(ModelConfig(preset="debug"), VOCAB, SEQ, {}, SEED).state_dict()
    gathered: dict[str, torch.Tensor] = {}
    for rank in (0, 1):
        for key, value in load_file(rank_weights / f"{layout}-rank{rank}.safetensors").items():
            if key in gathered:  # a weight both ranks see in full (FSDP/TP gathers it) must agree
                assert torch.equal(gathered[key], value), key
            gathered[key] = value
    assert gathered.keys() == single.keys()
    for key, value in single.items():
        assert torch.equal(gathered[key], value), key
