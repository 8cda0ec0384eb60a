"""Restarts under `torchrun --max-restarts N` (issue #4, promise 7): each restarted worker group rendezvouses
in a store namespace of its own, so it never reads the addresses the group before it published."""

from __future__ import annotations

import datetime
import os

import torch.distributed as dist

RESTART_ENV = "TORCHELASTIC_RESTART_COUNT"  # torchrun: 0 for the first worker group, then 1, 2, …


def restart_safe_store(timeout: datetime.timedelta) -> dist.Store | None:
    """torchrun's store (RANK, WORLD_SIZE, MASTER_ADDR/PORT from the environment) under a prefix naming this
    restart; None outside torchrun (init_process_group then reads the environment itself).

    Why: the agent hosts one TCPStore for the whole job (TORCHELASTIC_USE_AGENT_STORE) and keeps it across
    restarts, while `init_process_group` writes the default group's rendezvous keys under the same names every
    time. A restarted gloo rank 0 then reads the dead group's rank-1 address, fails to connect ("Connection
    refused") and the restart fails too (torch 2.13, measured in tests/dist/test_kill_resume_dist.py).
    """
    attempt = os.environ.get(RESTART_ENV)
    if attempt is None:
        return None
    store, _rank, _world = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"megalang/restart-{attempt}/", store)
