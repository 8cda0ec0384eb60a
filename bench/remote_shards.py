"""Training from object storage (issue #23): how fast `data.shards=s3://…` gets a shard folder's tokens onto the
trainer, against the same folder on local disk, all on this machine.

A shard folder of random uint16 tokens is written once and uploaded to a real S3 API server on 127.0.0.1 (moto's
server mode: a single Python process, so its rate is a floor, not what S3 or MinIO serve). Timed, each reading
every token of the train split once:
- local: `verify_shards(always)` (SHA-256 of every file, as a first start does) + reading the memory maps;
- s3 cold, no read-ahead: every file fetched (ranged GETs, hashed while written to the cache) on its first read;
- s3 cold, read-ahead N threads: the files queued for N background threads, then read in order;
- s3 warm: a restart on the filled cache (data.verify=auto trusts the hash cache; fetched bytes must be 0);
- s3 warm, data.verify=always: the cached copies re-hashed.
Prints one JSON line.

Usage: python bench/remote_shards.py [--files 8] [--mb 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from megalang.data.integrity import verify_shards
from megalang.data.remote import ShardCache, read_remote_manifest
from megalang.data.shards import open_split
from megalang.store.manifest import write_manifest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def write_shards(root: Path, files: int, mb: int) -> None:
    """`files` train shards of `mb` MiB of random tokens (one document each) and a one-file val split."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, count in (("train", files), ("val", 1)):
        names = []
        for i in range(count):
            tokens = rng.integers(3, 60_000, size=(mb << 20) // 2, dtype=np.uint16)
            tokens.tofile(root / f"{split}-{i:05d}.bin")
            np.array([len(tokens)], dtype=np.uint64).tofile(root / f"{split}-{i:05d}.idx")
            names += [f"{split}-{i:05d}.bin", f"{split}-{i:05d}.idx"]
        splits[split] = {"files": names, "tokens": count * (mb << 19), "documents": count}
    write_manifest(root, "data.tokenize", {}, [], {}, dtype="uint16", vocab_size=60_000, splits=splits)


def read_all(split) -> int:
    """Touch every token (a sum per file), as an epoch of training would."""
    total = 0
    for b in split.bins:
        total += int(np.asarray(b[:], dtype=np.uint64).sum())
    return total


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def remote_read(url: str, cache: Path, threads: int, verify: str) -> tuple[float, int, int]:
    """(seconds, fetched bytes, token sum) to open the URL through the cache and read every train token."""
    def run():
        shards = ShardCache(url, read_remote_manifest(url, {}), cache, {}, threads, verify)
        try:
            split = shards.open_split("train")
            shards.read_ahead([b.name for b in split.bins])
            return read_all(split), shards
        finally:
            shards.close()
    seconds, (total, shards) = timed(run)
    return seconds, shards.fetched_bytes, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mb", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import s3fs
    from moto.server import ThreadedMotoServer

    os.environ.update(CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(root / "xdg")  # a private hash cache
        local = root / "shards"
        local.mkdir()
        write_shards(local, args.files, args.mb)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            fs.mkdir("bench")
            fs.put(str(local) + "/", "bench/shards/", recursive=True)
            url = "s3://bench/shards"
            manifest = json.loads((local / "manifest.json").read_text())
            local_s, local_total = timed(lambda: (verify_shards(local, manifest, "always"),
                                                  read_all(open_split(local, "train", manifest)))[1])
            cold0 = remote_read(url, root / "cache-0", 0, "auto")
            cold_n = remote_read(url, root / "cache-n", args.threads, "auto")
            warm = remote_read(url, root / "cache-n", args.threads, "auto")
            warm_always = remote_read(url, root / "cache-n", args.threads, "always")
        finally:
            server.stop()
    assert local_total == cold0[2] == cold_n[2] == warm[2] == warm_always[2]  # the same tokens every way
    mb = args.files * args.mb
    rate = lambda seconds: round(mb / seconds, 1)
    print(json.dumps({
        "bench": "remote_shards", "train_mb": mb, "files": args.files, "cpus": os.cpu_count(),
        "machine": platform.machine(), "server": "moto ThreadedMotoServer on 127.0.0.1",
        "local_verify_and_read_mb_per_s": rate(local_s),
        "s3_cold_no_read_ahead_mb_per_s": rate(cold0[0]),
        f"s3_cold_read_ahead_{args.threads}_mb_per_s": rate(cold_n[0]),
        "s3_warm_cache_hit_mb_per_s": rate(warm[0]), "s3_warm_fetched_bytes": warm[1],
        "s3_warm_verify_always_mb_per_s": rate(warm_always[0]),
        "s3_cold_fetched_bytes": cold_n[1],
    }))


if __name__ == "__main__":
    main()
