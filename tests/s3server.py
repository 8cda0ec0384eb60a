"""A real S3 API server for tests: moto's server mode on 127.0.0.1 (a free port), reached through the real clients
(s3fs / botocore over HTTP), never a mock of them. Shared by tests/data/test_remote.py and the kill/resume test."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# moto accepts any credentials; fixed ones keep botocore from looking for real ones (and from the network).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on 127.0.0.1 and yield its endpoint URL (http://127.0.0.1:PORT)."""
    pytest.importorskip("s3fs", reason="pip install 'megalang[s3]'")
    server_module = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the dev extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_filesystem(endpoint: str):
    """A fresh s3fs client on `endpoint` (not fsspec's cached instance: tests change objects under it)."""
    import s3fs

    return s3fs.S3FileSystem(key=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                             endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def upload_folder(endpoint: str, local: Path, bucket: str, prefix: str) -> str:
    """Copy every file of `local` to s3://bucket/prefix/ (creating the bucket); return that URL."""
    fs = s3_filesystem(endpoint)
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    for path in sorted(local.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), f"{bucket}/{prefix}/{path.relative_to(local).as_posix()}")
    return f"s3://{bucket}/{prefix}"
