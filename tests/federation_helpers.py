"""What the federated tests share: a free port on 127.0.0.1 and the questions their sites' chats ask."""

from __future__ import annotations

import json
import socket
from pathlib import Path

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "What is 3 plus 4?", "Which planet is largest?", "What do bees make?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chats(path: Path, answer: str) -> Path:
    """Every question answered the same way: a site's planted style."""
    path.write_text("".join(json.dumps({"prompt": q, "completion": answer}) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path
