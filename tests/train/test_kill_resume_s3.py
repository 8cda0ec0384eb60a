"""Training from object storage (issue #23): `megalang train data.shards=s3://…` against a real S3 API server (moto
on 127.0.0.1), `kill -9` after a checkpoint, the same command again: the final weights, per-step losses and grad
norms are bitwise those of an uninterrupted run from the same shards on local disk, and the resumed leg reads
the shards from the local cache without downloading them again."""

from __future__ import annotations

import json

import pytest
from s3server import CREDENTIALS, s3_server, upload_folder  # tests/s3server.py (tests/ is on sys.path)

from .killing import (
    assert_bitwise_equal_runs,
    expected_steps,
    make_kill_shards,
    metric_lines,
    overrides,
    run_killed_at,
    run_to_completion,
    train_command,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

DETERMINISTIC = "train.deterministic=true"  # what a GPU rerun needs to be bitwise; a no-op cost on CPU


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def kill_shards(tmp_path_factory):
    return make_kill_shards(tmp_path_factory.mktemp("kill-data"))


def test_s3_run_killed_after_a_checkpoint_resumes_bitwise_equal_to_a_local_run(endpoint, kill_shards, tmp_path):
    shards, _windows = kill_shards
    url = upload_folder(endpoint, shards, "corpus", "tokenized/shards")
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}  # botocore's standard endpoint variable; s3fs passes it on
    local = tmp_path / "local-run"
    run_to_completion(train_command(1, overrides(shards, local, DETERMINISTIC)))

    cache = tmp_path / "cache"
    run = tmp_path / "s3-run"
    cmd = train_command(1, overrides(url, run, DETERMINISTIC, f"data.cache_dir={cache}"))
    run_killed_at(cmd, 5, 1, env)  # step 4's checkpoint is complete; step 5 dies mid gradient accumulation
    assert (run / "checkpoints" / "step-4" / "COMPLETE.json").is_file()
    from megalang.store.lineage import _unfinished_inputs

    assert _unfinished_inputs(run)[0]["path"] == url  # `lineage --find` names the URL the killed run read
    cached = {p.name: p.stat().st_ino for p in cache.rglob("*") if p.is_file()}
    listed = json.loads((shards / "manifest.json").read_text())["splits"]
    assert {n for s in listed.values() for n in s["files"]} <= set(cached)  # read-ahead fetched every split file
    assert not [n for n in cached if n.endswith(".tmp")]

    run_to_completion(cmd, env)
    assert [r["step"] for r in metric_lines(run)] == expected_steps([(5, 1)])
    assert_bitwise_equal_runs(run, local)
    # A cache hit: the resumed leg used the verified copies (a fetch would have renamed a new inode into place).
    assert {p.name: p.stat().st_ino for p in cache.rglob("*") if p.is_file()} == cached
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["inputs"][0]["path"] == url and manifest["inputs"][0]["kind"] == "artifact"
    resolved = json.loads((run / "config.yaml").read_text())
    assert resolved["data"]["shards"] == url
