"""Canaries (Carlini et al. 2019, "The Secret Sharer"): random secrets in a fixed sentence, inserted into a run's
training data `data.canaries.repeats` times each, and recorded in RUN/canaries.json so `megalang eval privacy` can
later measure how much more likely the trained model finds them than secrets it never saw (their exposure).

Each canary is one SFT chat (the user turn `prompt`, the assistant turn `template` with the secret). The chats go
to the train split only (`SftTokenizeConfig.train_only`), never to val. Control secrets, drawn from the same
space but never inserted, are recorded too: their exposure is the chance baseline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import CanaryConfig
from megalang.errors import UserError
from megalang.store.files import read_json, write_json_atomic, write_text_atomic
from megalang.store.run_dir import RunDir


def draw_secrets(cfg: CanaryConfig) -> tuple[list[str], list[str]]:
    """(canaries, controls): 2·count distinct secrets of `digits` digits, uniform over the space, from `seed`."""
    space = 10**cfg.digits
    if 2 * cfg.count > space:
        raise UserError(f"data.canaries.count={cfg.count} needs {2 * cfg.count} distinct secrets (canaries and "
                        f"controls) but {cfg.digits} digits give {space}; raise data.canaries.digits")
    rng = np.random.default_rng([cfg.seed, 19])
    secrets: list[str] = []
    while len(secrets) < 2 * cfg.count:
        s = str(int(rng.integers(0, space))).zfill(cfg.digits)
        if s not in secrets:
            secrets.append(s)
    return secrets[: cfg.count], secrets[cfg.count:]


def fill(template: str, secret: str) -> str:
    """The canary sentence of one secret (replace, not format: the template may hold other braces)."""
    return template.replace("{secret}", secret)


def canary_record(cfg: CanaryConfig) -> dict[str, Any]:
    """What RUN/canaries.json holds: everything `eval privacy` needs to rebuild the candidates."""
    canaries, controls = draw_secrets(cfg)
    return {"template": cfg.template, "prompt": cfg.prompt, "digits": cfg.digits, "candidate_space": 10**cfg.digits,
            "repeats": cfg.repeats, "seed": cfg.seed, "canaries": canaries, "controls": controls}


def canary_chat(record: dict[str, Any], secret: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": record["prompt"]},
                         {"role": "assistant", "content": fill(record["template"], secret)}]}


def write_canaries(cfg: CanaryConfig, run: RunDir) -> Path:
    """Write RUN/canaries.json and RUN/canaries.jsonl (each canary chat `repeats` times); return the JSONL path.
    Deterministic in the config, so a resumed run rewrites the same bytes and its SFT data stays tokenized."""
    record = canary_record(cfg)
    run.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run.canaries, record)
    lines = [json.dumps(canary_chat(record, s)) + "\n" for s in record["canaries"] for _ in range(cfg.repeats)]
    write_text_atomic(run.canary_chats, "".join(lines))
    return run.canary_chats


def read_canaries(run: RunDir) -> dict[str, Any]:
    """RUN/canaries.json; a run trained without data.canaries is a one-line error."""
    if not run.canaries.is_file():
        raise UserError(f"{run.root}: this run was trained without canaries (no {run.canaries.name}), so there is "
                        "no exposure to measure; train with data.canaries.count=N data.canaries.repeats=R")
    record = read_json(run.canaries, "canary record")
    if not isinstance(record, dict) or not record.get("canaries") or "template" not in record:
        raise UserError(f"{run.canaries}: not a canary record (no 'canaries'/'template'); re-run the training")
    return record


def canary_context(tokenizer, prompt: str) -> str:
    """The text the canary sentence follows in training: the chat up to the assistant turn, rendered exactly as
    data/sft.py renders it (a tokenizer without a chat template: the prompt and a newline)."""
    if not getattr(tokenizer, "chat_template", None):
        return prompt + "\n"
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
