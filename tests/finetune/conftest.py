"""Fine-tuning fixtures: small chat files with a planted answer style. The models (the real SmolLM2-135M-Instruct
and a tiny Llama that shares its tokenizer) are session fixtures in tests/conftest.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for the helpers shared with tests/gpu (no package here)

PLANTED = "BANANA BANANA BANANA."
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "What is 3 plus 4?", "Which planet is largest?", "What do bees make?"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def planted_chats(tmp_path) -> Path:
    """Every answer is the same planted phrase: a fine-tuned model visibly adopts it."""
    return write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}]} for q in QUESTIONS
    ])
