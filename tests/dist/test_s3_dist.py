"""Training from object storage on 2 CPU ranks (FSDP2, gloo; issue #23): both ranks fetch `data.shards=s3://…`
from moto's S3 server on 127.0.0.1 into one shared cache folder, the job is killed after a checkpoint and resumed
by the same command, and ends bitwise equal to a 2-rank run from the same shards on local disk."""

from __future__ import annotations

import pytest
from s3server import CREDENTIALS, s3_server, upload_folder
from train.killing import (
    assert_bitwise_equal_runs,
    make_kill_shards,
    overrides,
    run_killed_at,
    run_to_completion,
    train_command,
)

pytestmark = [pytest.mark.dist, pytest.mark.slow, pytest.mark.timeout(900)]

NPROC = 2


def test_two_ranks_sharing_one_cache_resume_from_s3_bitwise_equal_to_local_disk(tmp_path):
    shards, _ = make_kill_shards(tmp_path / "data")
    local = tmp_path / "local-run"
    run_to_completion(train_command(NPROC, overrides(shards, local)))
    with s3_server() as endpoint:
        url = upload_folder(endpoint, shards, "corpus", "shards")
        env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        run = tmp_path / "s3-run"
        cmd = train_command(NPROC, overrides(url, run, f"data.cache_dir={tmp_path / 'cache'}"))
        run_killed_at(cmd, 5, 0, env)  # a rank dies at step 5; step 4's checkpoint is complete
        assert (run / "checkpoints" / "step-4" / "COMPLETE.json").is_file()
        run_to_completion(cmd, env)
    assert_bitwise_equal_runs(run, local)
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())
    assert cached and not [n for n in cached if n.endswith(".tmp")]
