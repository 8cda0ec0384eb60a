"""`--executor ray` for the corpus-wide stages: near-dedup partitioned over Ray tasks (data/dedup_partitioned.py)
and tokenization in Ray tasks (data/tokenize_tasks.py) give the bytes one process gives, also when a Ray worker is
SIGKILLed mid-stage (Ray re-runs its task).

One local Ray with 2 CPUs serves the whole module (10–20 s to start on a busy 2-core machine; the file takes
~45 s); the corpora are tiny (93 documents).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from megalang.config import PrepareConfig, TokenizeConfig
from megalang.data.dedup import MinHasher, MinHashParams, Signatures, near_duplicate_mask
from megalang.data.dedup_partitioned import near_duplicates_partitioned
from megalang.data.documents import iter_prepared
from megalang.data.executors import KILL_TASK_ENV, kill_request
from megalang.data.pipeline import prepare
from megalang.data.tokenize import tokenize
from megalang.data.tokenize_tasks import plan_encode_tasks

ray = pytest.importorskip("ray")

VOCAB = [f"w{i:04d}" for i in range(5000)]
STEPS = ["normalize", "length", "exact_dedup", "near_dedup"]


def mutate(rng: random.Random, words: list[str], k: int) -> list[str]:
    out = list(words)
    for pos in rng.sample(range(2, len(out) - 2, 6), k):
        out[pos] = rng.choice(VOCAB)
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """60 originals of 80 words over 4 files; 24 near copies (1–2 words replaced, Jaccard ≈ 0.8–0.9), some in
    another file than their original; 8 exact copies; a near copy of a near copy (a transitive cluster)."""
    rng = random.Random(11)
    root = tmp_path_factory.mktemp("planted")
    originals = [rng.choices(VOCAB, k=80) for _ in range(60)]
    near = [mutate(rng, originals[i], rng.randint(1, 2)) for i in range(24)]
    near.append(mutate(rng, near[0], 1))
    exact = [originals[i] for i in range(30, 38)]
    docs = [" ".join(w) for w in originals + near + exact]
    rng.shuffle(docs)  # copies land before or after their original, in any file
    for k in range(4):
        (root / f"part-{k}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[k::4]))
    return root


@pytest.fixture(scope="module")
def local_ray():
    """One 2-CPU local Ray for the module; the stages join it instead of starting their own."""
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def prepare_cfg(root, out, **kw) -> PrepareConfig:
    return PrepareConfig(inputs=[str(root)], out=str(out), steps=STEPS, task_bytes=6_000, docs_per_file=20,
                         progress=False, workers=2, **kw)


def tokenize_cfg(prepared, tokenizer, out, **kw) -> TokenizeConfig:
    return TokenizeConfig(input=str(prepared), tokenizer=str(tokenizer), out=str(out), val_fraction=0.1,
                          tokens_per_shard=1024, task_docs=15, **kw)


def same_artifact(a: dict, b: dict) -> None:
    """Every file by SHA-256 and size, and every count, is the same (the config differs in `executor` only)."""
    assert a["files"] == b["files"]
    assert {k: v for k, v in a.items() if k not in ("created", "config", "inputs")} == \
        {k: v for k, v in b.items() if k not in ("created", "config", "inputs")}


@pytest.fixture(scope="module")
def one_process(planted, tokenizer_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    prepared = prepare(prepare_cfg(planted, root / "prepared"))
    shards = tokenize(tokenize_cfg(root / "prepared", tokenizer_dir, root / "shards"))
    return root, prepared, shards


def test_the_corpus_has_near_copies_that_near_dedup_removes(one_process):
    _, prepared, shards = one_process
    counts = prepared["counts"]
    assert counts["documents_in"] == 93
    assert counts["removed_exact_dedup"] == 8
    assert counts["removed_near_dedup"] >= 22  # of 25 planted near copies (MinHash recall is not exactly 1)
    assert counts["documents_out"] == 93 - 8 - counts["removed_near_dedup"]
    assert len(prepared["files"]) > 4  # several docs-NNNNN.parquet, so several encode tasks
    assert len(shards["splits"]["train"]["files"]) > 4 and shards["counts"]["val_documents"] > 0


def test_ray_gives_the_bytes_of_one_process(one_process, planted, tokenizer_dir, local_ray, tmp_path):
    root, prepared, shards = one_process
    assert len(plan_encode_tasks(str(root / "prepared"), 15)) >= 4
    ray_prepared = prepare(prepare_cfg(planted, tmp_path / "prepared", executor="ray"))
    same_artifact(ray_prepared, prepared)
    ray_shards = tokenize(tokenize_cfg(tmp_path / "prepared", tokenizer_dir, tmp_path / "shards", executor="ray"))
    same_artifact(ray_shards, shards)
    assert [r["text"] for r in iter_prepared(tmp_path / "prepared")] == [r["text"] for r in iter_prepared(root / "prepared")]
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(p.name for p in (root / "shards").iterdir())


@pytest.mark.parametrize("phase, index", [("prepare.near_dedup.buckets", 1), ("prepare.map", 2)])
def test_prepare_survives_a_killed_ray_worker(one_process, planted, local_ray, tmp_path, monkeypatch, phase, index):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_TASK_ENV, f"{phase}:{index}:{marker}")
    manifest = prepare(prepare_cfg(planted, tmp_path / "prepared", executor="ray"))
    assert marker.is_file()  # the task's first attempt ran and SIGKILLed its worker; Ray ran it again
    same_artifact(manifest, one_process[1])


@pytest.mark.parametrize("phase", ["tokenize.encode", "tokenize.shards"])
def test_tokenize_survives_a_killed_ray_worker(one_process, tokenizer_dir, local_ray, tmp_path, monkeypatch, phase):
    root = one_process[0]
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_TASK_ENV, f"{phase}:1:{marker}")
    manifest = tokenize(tokenize_cfg(root / "prepared", tokenizer_dir, tmp_path / "shards", executor="ray"))
    assert marker.is_file()
    same_artifact(manifest, one_process[2])


def test_ray_tokenize_with_a_curriculum_matches_one_process(one_process, tokenizer_dir, local_ray, tmp_path):
    root = one_process[0]
    runs = [tokenize(tokenize_cfg(root / "prepared", tokenizer_dir, tmp_path / ex, executor=ex,
                                  curriculum={"by": "length", "stages": 2})) for ex in ("local", "ray")]
    same_artifact(*runs)
    assert runs[0]["curriculum"]["stages"]


def test_cli_tokenize_takes_the_executor(one_process, tokenizer_dir, local_ray, tmp_path):
    from typer.testing import CliRunner

    from megalang.cli import app

    root = one_process[0]
    args = ["data", "tokenize", "-i", str(root / "prepared"), "--tokenizer", str(tokenizer_dir), "--val-fraction", "0.1",
            "--set", "tokens_per_shard=1024", "--set", "task_docs=15"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "shards"), "--executor", "ray", "--workers", "2"])
    assert result.exit_code == 0, result.output
    same_artifact(json.loads((tmp_path / "shards" / "manifest.json").read_text()), one_process[2])
    bad = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "bad"), "--executor", "spark"])
    assert bad.exit_code == 2 and "executor" in bad.output


def test_ray_tokenize_of_a_damaged_prepared_folder_is_a_user_error(one_process, tokenizer_dir, tmp_path):
    import shutil

    from megalang.errors import UserError

    damaged = tmp_path / "prepared"
    shutil.copytree(one_process[0] / "prepared", damaged)
    (damaged / "docs-00001.parquet").unlink()
    with pytest.raises(UserError, match=r"docs-00001\.parquet: missing"):
        tokenize(tokenize_cfg(damaged, tokenizer_dir, tmp_path / "shards", executor="ray"))
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()


# --- the partitioned algorithm itself, without Ray -----------------------------------------------------


def test_partitioned_near_dedup_equals_one_process_for_any_partitioning(tmp_path):
    rng = random.Random(4)
    hasher = MinHasher()
    base = [rng.choices(VOCAB, k=60) for _ in range(40)]
    texts = [" ".join(w) for w in base] + [" ".join(mutate(rng, base[i], 1)) for i in range(0, 40, 3)]
    rng.shuffle(texts)
    sigs = np.stack([hasher.signature(t) for t in texts])
    files = []
    for k, (a, b) in enumerate([(0, 10), (10, 10), (10, 31), (31, len(texts))]):  # one part is empty
        files.append(str(tmp_path / f"p{k}.sig.npy"))
        np.save(files[-1], sigs[a:b])
    valid = np.ones(len(texts), bool)
    valid[[3, 17]] = False  # e.g. removed by exact dedup before
    expected = near_duplicate_mask(Signatures([sigs], valid), MinHashParams())
    assert expected[0].sum() >= 10

    def run(fn, tasks, phase):
        return map(fn, tasks)

    for workers in (1, 3, 8):  # 2, 6 and 16 partitions
        got = near_duplicates_partitioned(files, valid, MinHashParams(), tmp_path / f"spill{workers}", run, workers)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_the_kill_request_names_one_phase_and_task():
    env = {KILL_TASK_ENV: "tokenize.encode:3:/tmp/x:y"}
    assert kill_request("tokenize.encode", env) == (3, "/tmp/x:y")
    assert kill_request("prepare.map", env) is None and kill_request("prepare.map", {}) is None
