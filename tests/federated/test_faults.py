"""The issue's kill test, with real processes on 127.0.0.1: `megalang federated server` and three
`megalang federated client` sites. One site is SIGKILLed in the middle of round 2 (the round completes with the
other two, min_clients=2); the server SIGKILLs itself right after round 2's checkpoint and, restarted, resumes from
round 2 and sends the sites the very bytes it saved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from federation_helpers import chats, free_port

from megalang.federated.strategy import SERVER_KILL_ENV
from megalang.store.files import sha256_file
from megalang.train.faults import KILL_ENV


def megalang(args: list[str], log: Path, **env) -> subprocess.Popen:
    with open(log, "w", encoding="utf-8") as out:
        return subprocess.Popen([sys.executable, "-m", "megalang", "federated", *args], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1", **env})


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def wait_for(predicate, timeout: float, what: str, logs: list[Path]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tails = "\n".join(f"--- {p}\n" + p.read_text(errors="replace")[-3000:] for p in logs if p.is_file())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


@pytest.mark.slow
def test_a_killed_site_is_dropped_and_a_killed_server_resumes_with_the_same_bytes(tiny_pretrained, tmp_path):
    root = tmp_path / "fed"
    common = ["recipes/sft-lora.yaml", f"model.pretrained={tiny_pretrained}", f"run.dir={root}", "train.seq_len=64",
              "federated.rounds=4", "federated.local_steps=3", "federated.min_clients=2", "federated.clients=3",
              f"federated.address=127.0.0.1:{free_port()}", "federated.round_timeout_s=120"]
    logs = [tmp_path / f"{name}.log" for name in ("server", "server2", "a", "b", "c")]
    server = megalang(["server", *common], logs[0], **{SERVER_KILL_ENV: "2"})
    sites = {name: megalang(["client", *common, f"site={name}",
                             f"data.sft={chats(tmp_path / f'{name}.jsonl', answer)}"],
                            tmp_path / f"{name}.log", **({KILL_ENV: "5:0"} if name == "c" else {}))
             for name, answer in (("a", "Yes."), ("b", "No."), ("c", "Maybe."))}
    try:
        assert server.wait(timeout=300) == -signal.SIGKILL, logs[0].read_text()[-3000:]
        rounds = lines(root / "server" / "rounds.jsonl")
        assert [r["round"] for r in rounds if "accepted" in r] == [1, 2]
        first, second = (r for r in rounds if "accepted" in r)
        assert sorted(first["accepted"]) == ["a", "b", "c"]
        # Site c died at step 5 (the second step of round 2): the round completed with a and b.
        assert sorted(second["accepted"]) == ["a", "b"] and len(second["failures"]) == 1, second
        assert sites["c"].wait(timeout=60) == -signal.SIGKILL
        saved = sha256_file(root / "server" / "rounds" / "round-2" / "global.safetensors")

        restarted = megalang(["server", *common], logs[1])
        assert restarted.wait(timeout=300) == 0, logs[1].read_text()[-3000:]
        assert "resuming" in logs[1].read_text() and "after round 2 of 4" in logs[1].read_text()
        for name in ("a", "b"):
            assert sites[name].wait(timeout=120) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
    finally:
        for p in [server, *sites.values()] + ([restarted] if "restarted" in locals() else []):
            if p.poll() is None:
                p.kill()
    rounds = [r for r in lines(root / "server" / "rounds.jsonl") if "accepted" in r]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    # The restarted server sent the bytes it had checkpointed after round 2, and the checkpoint did not change.
    for name in ("a", "b"):
        fits = {x["round"]: x for x in lines(root / f"site-{name}" / "federated.jsonl") if x["event"] == "fit"}
        assert fits[3]["global_sha256"] == rounds[1]["global_sha256"]
        assert fits[2]["global_sha256"] == rounds[0]["global_sha256"]
    assert json.loads((root / "server" / "summary.json").read_text())["rounds"] == 4
    adopted = {name: [x for x in lines(root / f"site-{name}" / "federated.jsonl") if x["event"] == "adopt"][-1]
               for name in ("a", "b")}
    assert adopted["a"]["global_sha256"] == adopted["b"]["global_sha256"] == rounds[3]["global_sha256"]
    assert adopted["a"]["round"] == 4 and adopted["a"]["step"] == 12
    assert not (root / "server" / "rounds" / "round-2").exists() or \
        sha256_file(root / "server" / "rounds" / "round-2" / "global.safetensors") == saved
    # Each surviving site is a complete run that `megalang export` reads.
    assert (root / "site-a" / "manifest.json").is_file() and (root / "site-a" / "checkpoints" / "step-12").is_dir()
