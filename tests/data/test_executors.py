"""data/executors.py: the same input and config give byte-identical output with 1 worker, 2 processes and Ray."""

from __future__ import annotations

import json
import random

import pytest

from megalang.config import PrepareConfig
from megalang.data.pipeline import plan_tasks, prepare
from megalang.errors import UserError

from .test_quality import HAMLET

ALL_STEPS = ["normalize", "length", "quality", "scrub", "decontaminate", "exact_dedup", "near_dedup"]


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory):
    """Web pages (good, junk, duplicated across files), a play, code and an eval file, over 6 files."""
    root = tmp_path_factory.mktemp("mixed")
    rng = random.Random(3)
    pages = [page(rng) + f" Page {i} ends here, mail me at user{i}@example.com." for i in range(60)]
    junk = ["buy now " * 80, "Click here\nMenu\nHome\nLogin", "lorem ipsum dolor sit amet " * 30]
    for k in range(4):
        docs = pages[k::4] + pages[(k + 1) % 4 :: 8] + junk  # every other file repeats some pages of the next
        (root / f"web-{k}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (root / "hamlet.txt").write_text(HAMLET)
    (root / "tool.py").write_text("def main():\n    return sum(i * i for i in range(10))\n")
    (root / "eval.jsonl").write_text(json.dumps({"text": pages[7]}) + "\n")
    return root


def page(rng: random.Random) -> str:
    """Ten made-up but well-formed sentences: passes the web filters, shares no 5-grams with other pages."""
    def word():
        return "".join(rng.choice(["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pin", "qua"]) for _ in range(3))
    return " ".join(f"The {word()} of the {word()} was {word()} and {word()} with {word()} {word()}." for _ in range(10))


def run(root, out, **kw):
    cfg = PrepareConfig(inputs=[str(root / "web-*.jsonl"), str(root / "hamlet.txt"), str(root / "tool.py")],
                        out=str(out), steps=ALL_STEPS, decontaminate=[str(root / "eval.jsonl")],
                        task_bytes=8_000, progress=False, **kw)
    return prepare(cfg)


def test_one_worker_many_workers_and_ray_give_identical_output(mixed_corpus, tmp_path):
    one = run(mixed_corpus, tmp_path / "one", workers=1)
    two = run(mixed_corpus, tmp_path / "two", workers=2)
    assert len(plan_tasks([p for p in sorted(mixed_corpus.glob("web-*.jsonl"))], 8_000)) > 2
    counts = one["counts"]
    assert counts["removed_quality"] >= 3 * 4 and counts["removed_exact_dedup"] > 0
    assert counts["removed_decontaminate"] == 1 and one["scrubbed"]["EMAIL"] > 0
    assert counts["steps"]["quality"]["reasons"].keys() >= {"gopher_repetition:top_2_gram"}
    for other in (two,) + ((run_ray(mixed_corpus, tmp_path),) if ray_available() else ()):
        assert other["files"] == one["files"]  # every output file, rejected samples included, by SHA-256
        assert other["counts"] == one["counts"]
        assert other["scrubbed"] == one["scrubbed"] and other["decontamination"] == one["decontamination"]


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_ray(root, tmp_path):
    return run(root, tmp_path / "ray", workers=2, executor="ray")


def test_kinds_keep_the_play_and_the_code(mixed_corpus, tmp_path):
    manifest = run(mixed_corpus, tmp_path / "out", workers=1)
    sources = {json.loads(line)["source"] for line in (tmp_path / "out" / "rejected" / "quality.jsonl").read_text().splitlines()}
    assert not any(s.endswith(("hamlet.txt", "tool.py")) for s in sources)
    assert manifest["counts"]["documents_out"] > 2


def test_a_user_error_in_a_worker_reaches_the_caller(tmp_path):
    (tmp_path / "in").mkdir()
    for k in range(2):
        (tmp_path / "in" / f"{k}.jsonl").write_text(json.dumps({"text": "fine document number one"}) + "\n{broken\n")
    with pytest.raises(UserError, match=r"0\.jsonl:2: malformed JSON"):
        prepare(PrepareConfig(inputs=[str(tmp_path / "in")], out=str(tmp_path / "out"), workers=2, task_bytes=1))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
