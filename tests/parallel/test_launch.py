"""`megalang launch` builds the torchrun command line (the launches themselves run in tests/dist)."""

import pytest

from megalang.errors import UserError
from megalang.launch import torchrun_args


def test_single_node_is_standalone():
    assert torchrun_args(["train", "r.yaml", "a.b=1"], 2) == [
        "--nproc-per-node=2", "--nnodes=1", "--max-restarts=0", "--standalone", "-m", "megalang", "train", "r.yaml",
        "a.b=1"]


def test_multi_node_needs_and_uses_a_rendezvous_endpoint():
    with pytest.raises(UserError, match="--rdzv-endpoint"):
        torchrun_args(["train"], 8, nnodes="2")
    args = torchrun_args(["train"], 8, nnodes="2", rdzv_endpoint="node0:29500", rdzv_id="job7")
    assert "--rdzv-endpoint=node0:29500" in args and "--rdzv-id=job7" in args and "--standalone" not in args


def test_empty_command_is_a_user_error():
    with pytest.raises(UserError, match="after '--'"):
        torchrun_args([], 2)
