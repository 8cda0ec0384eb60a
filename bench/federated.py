"""Federated rounds in the clear and under CKKS side by side (issue #21): LoRA r=8 (every attention and MLP
projection, 2.44 M values) on SmolLM2-135M-Instruct, 4 sites as processes on 127.0.0.1 (`megalang federated
simulate`), the same data, seeds and rounds; per round: wall time, bytes on the wire, and the encrypt / add / decrypt
time. One JSON line.

Usage: python bench/federated.py [rounds] [local_steps]      (default 3 rounds of 10 local steps, the recipe's)

Round wall time is the time between the ends of consecutive rounds at the server (local training, the sites'
encryption, transfer, aggregation, the checkpoint, distributing and adopting the previous round's global weights),
averaged over rounds 2..N: round 1 also waits for the sites to load the model. Every site trains with
cores / 4 threads; run it on an idle machine.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from _smollm2 import smollm2_folder

SITES = 4
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "What is 3 plus 4?", "Which planet is largest?", "What do bees make?", "What is a firewall?",
             "What does TLS protect?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def run(mode: str, model: Path, chats: Path, keys: Path, root: Path, rounds: int, steps: int) -> dict:
    from typer.testing import CliRunner

    from megalang.cli import app

    started = time.perf_counter()
    result = CliRunner().invoke(app, [
        "federated", "simulate", "recipes/federated-lora.yaml", f"model.pretrained={model}", f"data.sft={chats}",
        f"clients={SITES}", f"federated.rounds={rounds}", f"federated.local_steps={steps}", "lora.rank=8",
        "train.seq_len=64", "train.micro_batch_size=2", f"federated.encryption={mode}", f"federated.context={keys}",
        f"federated.address=127.0.0.1:{free_port()}", f"federated.min_clients={SITES}", f"run.dir={root}"])
    if result.exit_code != 0:
        raise SystemExit(f"{mode}: {result.output[-3000:]}")
    wall = time.perf_counter() - started
    server = [r for r in lines(root / "server" / "rounds.jsonl") if "accepted" in r]
    fits = [x for i in range(SITES) for x in lines(root / f"site-{i}" / "federated.jsonl") if x["event"] == "fit"]
    adopts = [x for i in range(SITES) for x in lines(root / f"site-{i}" / "federated.jsonl") if x["event"] == "adopt"]
    ends = [r["time"] for r in server]
    later = [b - a for a, b in zip(ends, ends[1:])]

    def mean(values):
        return round(sum(values) / len(values), 3) if values else None

    return {
        "round_wall_s": mean(later), "first_round_wall_s": round(server[0]["round_s"], 3),
        "total_wall_s": round(wall, 1),
        "train_s_per_site": mean([f["train_s"] for f in fits]),
        "encrypt_s_per_site": mean([f["encrypt_s"] for f in fits]),
        "add_s": mean([r["aggregate_s"] for r in server]),
        "decrypt_s_per_site": mean([a["decrypt_s"] for a in adopts]),
        "bytes_up_per_site": server[-1]["received_bytes"] // SITES,
        "bytes_down_per_site": server[-1]["sent_bytes_per_site"],
        "final_train_loss": mean(list(server[-1]["loss"].values())),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(os.environ.get("BENCH_KEEP", tmp))
        model = smollm2_folder(tmp / "smollm2")
        chats = tmp / "chats.jsonl"
        chats.write_text("".join(json.dumps({"prompt": q, "completion": f"Answer {i}: {q[::-1]}"}) + "\n"
                                 for i, q in enumerate(QUESTIONS * 4)))
        from megalang.federated.crypto import keygen

        keygen(tmp / "keys")
        plain = run("none", model, chats, tmp / "keys", tmp / "plain", rounds, steps)
        encrypted = run("ckks", model, chats, tmp / "keys", tmp / "ckks", rounds, steps)
    print(json.dumps({
        "bench": "federated", "model": "SmolLM2-135M-Instruct", "lora_rank": 8, "values_per_update": 2_442_240,
        "sites": SITES, "rounds": rounds, "local_steps": steps, "cores": os.cpu_count(),
        "plaintext": plain, "ckks": encrypted,
        "encrypted_over_plaintext_round": round(encrypted["round_wall_s"] / plain["round_wall_s"], 2),
        "wire_ratio_up": round(encrypted["bytes_up_per_site"] / plain["bytes_up_per_site"], 1),
    }))


if __name__ == "__main__":
    main()
