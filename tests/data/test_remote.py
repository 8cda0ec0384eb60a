"""Token shards behind an fsspec URL (data/remote.py, issue #23) against a real S3 API server (moto on 127.0.0.1):
fetched bytes verified against the manifest, cache hits, read-ahead, and every bad case as one line with exit 2
through the real CLI, naming the URL or field and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s3server import CREDENTIALS, s3_filesystem, s3_server, upload_folder
from train.conftest import make_shards, make_tokenizer
from typer.testing import CliRunner

from megalang.cli import app
from megalang.data.remote import ShardCache, check_name, first_read_order, read_remote_manifest
from megalang.data.shards import TokenSplit, open_split
from megalang.errors import UserError


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("remote")
    return make_shards(root / "shards", make_tokenizer(root / "tok"), train_docs=200, val_docs=20)


@pytest.fixture
def s3(endpoint, monkeypatch, tmp_path):
    """The server as botocore finds it (AWS_ENDPOINT_URL, test credentials) and a private hash cache."""
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "XDG_CACHE_HOME": str(tmp_path / "xdg")}.items():
        monkeypatch.setenv(name, value)
    return endpoint


def unique_prefix(request) -> str:
    return request.node.name.replace("[", "-").replace("]", "")


def open_cache(url: str, cache: Path, threads: int = 2, verify: str = "auto") -> ShardCache:
    return ShardCache(url, read_remote_manifest(url, {}), cache, {}, threads, verify)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- fetching, verification, cache hits, read-ahead ----------------------------------------------------


def test_remote_split_reads_the_same_tokens_as_the_local_folder_and_a_second_open_fetches_nothing(
        s3, local_shards, tmp_path, request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    cache = open_cache(url, tmp_path / "cache", threads=0)  # no read-ahead: each file fetched on its first read
    try:
        remote, local = cache.open_split("train"), open_split(local_shards, "train")
        assert len(remote) == len(local) and remote.num_documents == local.num_documents
        idx_bytes = cache.fetched_bytes  # .idx files come at open; token files only when read
        assert idx_bytes == sum(cache.entries[b.name[:-4] + ".idx"].size for b in remote.bins)
        for start in range(0, len(local) - 33, 101):
            np.testing.assert_array_equal(remote.window(start, 33), local.window(start, 33))
        assert [d.tolist() for d in remote.documents()] == [d.tolist() for d in local.documents()]
        fetched = cache.fetched_bytes
        assert fetched == idx_bytes + sum(cache.entries[b.name].size for b in remote.bins)
    finally:
        cache.close()
    again = open_cache(url, tmp_path / "cache")
    try:
        again.open_split("train").window(0, 100)
        assert again.fetched_bytes == 0  # every cached copy verified (hash cache) and used
    finally:
        again.close()


def test_read_ahead_fetches_files_in_the_background_before_they_are_read(s3, local_shards, tmp_path, request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    cache = open_cache(url, tmp_path / "cache", threads=2)
    try:
        split = cache.open_split("train")
        cache.read_ahead([b.name for b in split.bins])
        deadline = time.monotonic() + 60
        while not all((cache.folder / b.name).is_file() for b in split.bins) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all((cache.folder / b.name).is_file() for b in split.bins), files_under(cache.folder)
        assert cache.fetched_bytes == sum(e.size for e in cache.entries.values() if e.name.startswith("train-"))
    finally:
        cache.close()


def test_a_shard_whose_bytes_differ_from_the_manifest_is_refused_and_never_cached(s3, local_shards, tmp_path,
                                                                                   request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    damaged = bytearray((local_shards / "train-00001.bin").read_bytes())
    damaged[100] ^= 0xFF  # same size: only the SHA-256 can tell
    s3_filesystem(s3).pipe_file(f"{url[5:]}/train-00001.bin", bytes(damaged))
    cache = open_cache(url, tmp_path / "cache", threads=0)
    try:
        split = cache.open_split("train")
        split.window(0, 10)  # train-00000 is fine
        with pytest.raises(UserError, match=r"train-00001\.bin: .*SHA-256.*re-upload"):
            split.window(split.starts[1], 10)
        assert "train-00001.bin" not in files_under(cache.folder)
        assert not [n for n in files_under(cache.folder) if n.endswith(".tmp")]
    finally:
        cache.close()


def test_a_cached_copy_damaged_on_local_disk_is_fetched_again(s3, local_shards, tmp_path, request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    first = open_cache(url, tmp_path / "cache", threads=0)
    first.open_split("train").window(0, 10)
    first.close()
    cached = first.folder / "train-00000.bin"
    cached.write_bytes(b"\0" * cached.stat().st_size)  # same size, new mtime: the hash cache no longer vouches
    again = open_cache(url, tmp_path / "cache", threads=0)
    try:
        np.testing.assert_array_equal(again.open_split("train").window(0, 50),
                                      open_split(local_shards, "train").window(0, 50))
        assert again.fetched_bytes == cached.stat().st_size  # only the damaged file came again
    finally:
        again.close()


@pytest.mark.parametrize("name", ["../escape.bin", "/etc/escape.bin", "a/../../escape.bin", "..\\escape.bin"])
def test_manifest_names_outside_the_folder_are_refused_before_anything_is_written(s3, local_shards, tmp_path,
                                                                                  request, name):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    manifest = json.loads((local_shards / "manifest.json").read_text())
    manifest["files"][name] = {"size": 4, "sha256": "0" * 64}
    manifest["splits"]["train"]["files"].append(name)
    s3_filesystem(s3).pipe_file(f"{url[5:]}/manifest.json", json.dumps(manifest).encode())
    with pytest.raises(UserError, match="outside the shard folder"):
        read_remote_manifest(url, {})
    with pytest.raises(UserError, match="outside the shard folder"):
        ShardCache(url, manifest, tmp_path / "cache", {}, 0)  # a caller that skipped the check is refused too
    assert files_under(tmp_path) == []  # nothing fetched, nothing written anywhere


def test_check_name_keeps_plain_names_and_subfolders():
    assert check_name("m", "train-00000.bin") == "train-00000.bin"
    assert check_name("m", "sub/train-00000.bin") == "sub/train-00000.bin"
    for bad in ("", ".", "a//b", "./a", "C:evil", 3):
        with pytest.raises(UserError):
            check_name("m", bad)


def test_first_read_order_follows_the_windows_then_the_untouched_files():
    split = TokenSplit([np.zeros(100, np.uint16)] * 4, [np.array([100], np.uint64)] * 4)
    assert first_read_order(split, np.array([7, 1, 6, 2, 0]), 32) == [2, 0, 1, 3]  # windows start at 224, 32, …


# --- bad cases through the CLI: one line, exit 2 -----------------------------------------------------


def train_args(shards: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["train", "model.preset=debug", f"data.shards={shards}", f"run.dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path / 'cache'}", "train.max_steps=2", "train.seq_len=32",
            "train.micro_batch_size=2", "train.progress=false", "train.device=cpu", "metrics.report=false",
            "metrics.system=false", *extra]


def assert_cli_error(args: list[str], *words: str) -> str:
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_cli_missing_bucket(s3, tmp_path):
    assert_cli_error(train_args("s3://no-such-bucket/shards", tmp_path), "s3://no-such-bucket/shards/manifest.json",
                     "no such bucket or key", "data.shards")
    assert not (tmp_path / "run").exists()


def test_cli_missing_key_listed_in_the_manifest(s3, local_shards, tmp_path, request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    s3_filesystem(s3).rm_file(f"{url[5:]}/train-00002.bin")
    assert_cli_error(train_args(url, tmp_path), f"{url}/train-00002.bin", "no such key", "upload the whole")
    assert not (tmp_path / "run").exists()


def test_cli_damaged_shard_stops_the_run_with_exit_2(s3, local_shards, tmp_path, request):
    url = upload_folder(s3, local_shards, "shards", unique_prefix(request))
    damaged = bytearray((local_shards / "train-00000.bin").read_bytes())
    damaged[7] ^= 0x01
    s3_filesystem(s3).pipe_file(f"{url[5:]}/train-00000.bin", bytes(damaged))
    assert_cli_error(train_args(url, tmp_path), f"{url}/train-00000.bin", "SHA-256", "re-upload")
    assert not [n for n in files_under(tmp_path / "cache") if n.endswith(("train-00000.bin", ".tmp"))]


def test_cli_unreachable_endpoint(s3, tmp_path):
    # Port 9 (discard) on loopback: nothing listens there. Few retries, so the test does not wait out botocore's.
    line = assert_cli_error(train_args("s3://shards/x", tmp_path, "data.storage_options.endpoint_url=http://127.0.0.1:9",
                                       'data.storage_options.config_kwargs={"retries": {"max_attempts": 1}}'),
                            "s3://shards/x/manifest.json", "unreachable", "AWS_ENDPOINT_URL")
    assert "127.0.0.1:9" in line


def test_cli_unsupported_scheme_and_missing_backend(tmp_path):
    assert_cli_error(train_args("nosuchscheme://bucket/shards", tmp_path), "data.shards=nosuchscheme://bucket/shards",
                     "unsupported URL scheme", "local folder")
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        assert_cli_error(train_args("gs://bucket/shards", tmp_path), "data.shards=gs://bucket/shards",
                         "backend is not installed", "gcsfs")
    else:
        pytest.skip("gcsfs is installed: no missing backend to show")


def test_cli_credentials_in_storage_options_are_refused(tmp_path):
    assert_cli_error(train_args("s3://b/shards", tmp_path, "data.storage_options.secret=abc"),
                     "data.storage_options.secret", "AWS_PROFILE")


def test_cli_storage_option_the_backend_does_not_take(s3, tmp_path):
    assert_cli_error(train_args("s3://b/shards", tmp_path, "data.storage_options.no_such_option=1"),
                     "data.storage_options not accepted", "no_such_option")


def test_cli_storage_options_without_a_url_are_refused(local_shards, tmp_path):
    assert_cli_error(train_args(str(local_shards), tmp_path, "data.storage_options.anon=true"),
                     "data.storage_options", "only a data.shards URL")


def test_a_file_url_goes_through_the_cache_too(local_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    url = local_shards.resolve().as_uri()  # file:///…: fsspec's local filesystem behind the same cache
    cache = open_cache(url, tmp_path / "cache", threads=1)
    try:
        np.testing.assert_array_equal(cache.open_split("val").window(0, 64), open_split(local_shards, "val").window(0, 64))
        assert cache.folder.parent == tmp_path / "cache" and (cache.folder / "val-00000.bin").is_file()
    finally:
        cache.close()


def test_a_download_left_by_a_killed_process_is_removed_and_a_live_ones_kept(local_shards, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    url = local_shards.resolve().as_uri()
    open_cache(url, tmp_path / "cache", threads=0).close()  # makes the cache folder
    folder = next((tmp_path / "cache").iterdir())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = folder / f"train-00000.bin.{int(dead.stdout)}.140.tmp"
    live = folder / f"train-00001.bin.{os.getpid()}.140.tmp"
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    open_cache(url, tmp_path / "cache", threads=0).close()
    assert not stale.exists() and live.exists()


def test_a_symlink_planted_in_the_cache_is_refused_not_followed(local_shards, tmp_path, monkeypatch):
    from megalang.data.remote import cache_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    url = local_shards.resolve().as_uri()
    folder = tmp_path / "cache" / cache_key(url)
    folder.mkdir(parents=True)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not yours")
    (folder / "train-00000.bin").symlink_to(outside)
    with pytest.raises(UserError, match="leads outside the cache folder"):
        open_cache(url, tmp_path / "cache", threads=0)
    assert outside.read_bytes() == b"not yours"


def test_bench_remote_shards_runs_end_to_end_and_its_restart_fetches_nothing():
    """bench/remote_shards.py on a tiny folder (its figures are in docs/benchmarks.md; nothing is timed here)."""
    pytest.importorskip("moto.server")
    bench = Path(__file__).resolve().parents[2] / "bench" / "remote_shards.py"
    result = subprocess.run([sys.executable, str(bench), "--files", "2", "--mb", "1"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["bench"] == "remote_shards" and out["s3_warm_fetched_bytes"] == 0
    assert out["s3_cold_fetched_bytes"] == 2 * (1 << 20) + 2 * 8  # the token files and their .idx, once


def test_shards_from_the_store_with_their_tokenizer_elsewhere_train_through_data_tokenizer(s3, tmp_path, request):
    """The manifest's tokenizer_path is a folder on the machine that tokenized; on another machine data.tokenizer
    names a copy, refused unless its manifest.json has the SHA-256 the shards record."""
    shards = make_shards(tmp_path / "shards", make_tokenizer(tmp_path / "tok"), train_docs=60, val_docs=8)
    url = upload_folder(s3, shards, "shards", unique_prefix(request))
    (tmp_path / "tok").rename(tmp_path / "tok-copy")  # as seen from the training machine
    assert_cli_error(train_args(url, tmp_path), "tokenizer folder", "data.tokenizer=FOLDER")
    other = make_tokenizer(tmp_path / "other", tag="b")
    assert_cli_error(train_args(url, tmp_path, f"data.tokenizer={other}"), f"data.tokenizer={other}", "SHA-256",
                     "tokenizer folder that made them")
    result = CliRunner().invoke(app, train_args(url, tmp_path, f"data.tokenizer={tmp_path / 'tok-copy'}"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    derived = json.loads((run / "checkpoints" / "step-2" / "run_config.json").read_text())["derived"]
    assert derived["tokenizer_path"] == str((tmp_path / "tok-copy").resolve()) and derived["shards"] == url
    assert (run / "tokenizer" / "tokenizer.json").read_text() == (tmp_path / "tok-copy" / "tokenizer.json").read_text()
