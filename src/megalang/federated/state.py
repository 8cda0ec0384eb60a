"""The server's state between rounds and its checkpoint: SERVER/rounds/round-N/ holds the accumulated global update
as sent to the sites (global.safetensors: float32 tensors, or the CKKS ciphertexts' bytes) and state.json (round,
what round 1 pinned, the DP accountant's history). Written as round-N.tmp and renamed; a restarted server resumes
from the newest complete round and sends the same bytes it saved."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from megalang.config import FederatedConfig
from megalang.errors import UserError
from megalang.federated.updates import Layout, payload_sha256
from megalang.store.files import fsync_dir, write_json_atomic
from megalang.store.run_dir import ServerDir

GLOBAL, STATE = "global.safetensors", "state.json"
KEEP_ROUNDS = 2


@dataclass
class ServerState:
    round: int = 0  # rounds completed
    accumulated: list[np.ndarray] = field(default_factory=list)  # D as sent: float32 tensors or ciphertext bytes
    pins: dict[str, Any] = field(default_factory=dict)  # layout_sha256, base_sha256, size (+ shapes in the clear)
    dp_history: list[list] = field(default_factory=list)  # [noise multiplier, sample rate, steps] per noised round
    encryption: str = "none"
    context_sha256: str | None = None

    def shapes_layout(self) -> Layout:
        return [(f"tensor {i}", tuple(s)) for i, s in enumerate(self.pins["shapes"])]


def epsilon(history: list[list], delta: float) -> float:
    """ε of client-level DP over the noised rounds: Opacus' RDP accountant, one step per round (the sampled sites
    play the role of a batch)."""
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    return float(accountant.get_epsilon(delta=delta))


def save_round(server: ServerDir, state: ServerState) -> str:
    """Checkpoint `state` as round-N; returns the SHA-256 of the global update's bytes as sent."""
    final = server.round(state.round)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    digest = payload_sha256(state.accumulated)
    save_file({f"t-{i:05d}": np.ascontiguousarray(a) for i, a in enumerate(state.accumulated)}, str(tmp / GLOBAL))
    write_json_atomic(tmp / STATE, {"round": state.round, "pins": state.pins, "dp_history": state.dp_history,
                                    "encryption": state.encryption, "context_sha256": state.context_sha256,
                                    "global_sha256": digest, "tensors": len(state.accumulated)})
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(server.rounds)
    for old in server.round_numbers()[:-KEEP_ROUNDS]:
        shutil.rmtree(server.round(old))
    return digest


def load_state(server: ServerDir, fed: FederatedConfig, context_sha256: str | None) -> ServerState:
    """The newest complete round, or a fresh state; a checkpoint of another mode or key is refused."""
    fresh = ServerState(encryption=fed.encryption, context_sha256=context_sha256)
    rounds = server.round_numbers()
    if not rounds:
        return fresh
    folder = server.round(rounds[-1])
    try:
        info = json.loads((folder / STATE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / GLOBAL))
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: unreadable server checkpoint ({e}); remove the folder to resume from the one "
                        "before it") from None
    if info.get("encryption") != fed.encryption or info.get("context_sha256") != context_sha256:
        raise UserError(f"{folder} was written with federated.encryption={info.get('encryption')} and another key "
                        f"context than now: resume with the same federated.encryption and federated.context, or use "
                        "a new run.dir")
    accumulated = [tensors[f"t-{i:05d}"] for i in range(int(info["tensors"]))]
    if payload_sha256(accumulated) != info["global_sha256"]:
        raise UserError(f"{folder / GLOBAL}: its SHA-256 differs from state.json's (damaged); remove the folder to "
                        "resume from the round before it")
    return ServerState(round=int(info["round"]), accumulated=accumulated, pins=info["pins"],
                       dp_history=info["dp_history"], encryption=fed.encryption, context_sha256=context_sha256)
