"""Shard verification at train start: SHA-256 throughput with 1 vs N hashing threads, against a serial
re-hash as `megalang verify` does it and against coreutils `sha256sum`, plus a restart that hits the cache.

Files are random bytes (hashing speed does not depend on content) written once; every figure reads them from
the page cache (warm), so this measures hashing, not the disk. Prints one JSON line.

Usage: python bench/shard_verify.py [--files 16] [--mb 64] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from megalang.data import integrity
from megalang.store.files import sha256_file


def write_files(root: Path, files: int, mb: int) -> dict:
    block = os.urandom(1 << 20)
    listed = {}
    for i in range(files):
        path = root / f"train-{i:05d}.bin"
        with open(path, "wb") as f:
            for j in range(mb):
                f.write(block[j % 7:] + block[:j % 7])  # distinct 1 MiB blocks
        listed[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    return {"files": listed, "splits": {"train": {"files": sorted(listed)}}}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--mb", type=int, default=64, help="MiB per file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shards"
        root.mkdir()
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        manifest = write_files(root, args.files, args.mb)
        gb = args.files * args.mb / 1024
        paths = [root / name for name in manifest["files"]]
        results = {}
        for threads in (1, args.threads):
            integrity.HASH_THREADS = threads
            results[f"megalang_{threads}_threads_gb_per_s"] = gb / timed(
                lambda: integrity.verify_shards(root, manifest, "always"))
        integrity.HASH_THREADS = args.threads
        results["megalang_cached_restart_s"] = timed(lambda: integrity.verify_shards(root, manifest, "auto"))
        results["serial_megalang_verify_gb_per_s"] = gb / timed(lambda: [sha256_file(p) for p in paths])
        if shutil.which("sha256sum"):
            results["coreutils_sha256sum_gb_per_s"] = gb / timed(
                lambda: subprocess.run(["sha256sum", *map(str, paths)], check=True, capture_output=True))
    print(json.dumps({"bench": "shard_verify", "files": args.files, "gib": round(gb, 3), "threads": args.threads,
                      "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                      **{k: round(v, 3) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
