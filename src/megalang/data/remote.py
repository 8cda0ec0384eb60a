"""Token shards behind an fsspec URL (`data.shards=s3://…`, gs://, hdfs://, abfs://, file://): the shard folder's
manifest read from the store, every file fetched once into a local cache folder and checked against the manifest's
SHA-256 before anything reads it, and background read-ahead that fetches the files training will read next.

The cache folder is `data.cache_dir` (default `$XDG_CACHE_HOME/megalang/shards`, i.e. `~/.cache/megalang/shards`)
/ one folder per URL. A file gets its final name only after its bytes matched the manifest (written as
`NAME.<pid>.<thread>.tmp`, renamed when verified), so a partial or damaged download never looks cached; a restart
re-checks cached files as `data.verify` says (auto: the (size, mtime) hash cache of data/integrity.py) and fetches
only what is missing or damaged. File names come from the manifest and are untrusted: a name that is absolute or
climbs out with `..` refuses the whole folder, so nothing is ever written outside the cache folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megalang.data.integrity import load_cache, save_cache
from megalang.data.readers import first_line
from megalang.data.shards import TokenSplit, shard_dtype
from megalang.errors import UserError, naming
from megalang.store.files import sha256_files
from megalang.store.manifest import MANIFEST

CHUNK = 8 << 20  # bytes per ranged read: large enough that request latency is a small part of the transfer
SCHEMES = "s3://, gs://, hdfs://, abfs://, file:// or any other fsspec URL"


def is_remote(shards: str | None) -> bool:
    """data.shards names an fsspec URL (file:// included: it goes through the cache like any store)."""
    return bool(shards) and "://" in str(shards)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "megalang" / "shards"


def open_store(url: str, storage_options: dict[str, Any]):
    """(fsspec filesystem, path inside it) for `url`; an unknown scheme or a missing backend is a UserError."""
    import fsspec

    scheme = url.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(url, **storage_options)
    except ImportError as e:
        extra = " (pip install 'megalang[s3]')" if scheme in ("s3", "s3a") else ""
        raise UserError(f"data.shards={url}: the {scheme}:// backend is not installed ({first_line(e)}){extra}; "
                        "install it or copy the shards to a local folder") from None
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise UserError(f"data.shards={url}: unsupported URL scheme '{scheme}://'; use a local folder or {SCHEMES}") \
            from None
    except TypeError as e:  # a storage option the backend's constructor does not take
        raise UserError(f"data.storage_options: not accepted by the {scheme}:// backend ({first_line(e)}); "
                        "see its fsspec documentation") from None
    except OSError as e:  # e.g. hdfs:// without libhdfs / a JVM
        raise UserError(f"data.shards={url}: the {scheme}:// backend could not start ({first_line(e)}); install "
                        "what it needs or copy the shards to a local folder") from None


@contextlib.contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn what a store raises while reading `url` into one line naming it: a missing bucket or key, refused
    credentials, or an endpoint that cannot be reached (network, DNS and auth errors come as many types)."""
    try:
        yield
    except (UserError, _Cancelled):
        raise
    except FileNotFoundError as e:
        raise UserError(f"{url}: no such bucket or key ({first_line(e)}); check data.shards (the folder written by "
                        "`megalang data tokenize`, uploaded whole)") from None
    except PermissionError as e:
        raise UserError(f"{url}: access denied ({first_line(e)}); check the store's credentials (e.g. AWS_PROFILE "
                        "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)") from None
    except TypeError as e:  # s3fs and others build their client on first use, with data.storage_options
        raise UserError(f"{url}: data.storage_options not accepted by the backend ({first_line(e)}); see its fsspec "
                        "documentation for the options it takes") from None
    except Exception as e:  # noqa: BLE001 - network, DNS and auth errors have no common type across backends
        raise UserError(f"{url}: unreachable ({type(e).__name__}: {first_line(e)}); check the URL, the endpoint "
                        "(AWS_ENDPOINT_URL or data.storage_options.endpoint_url) and the network") from None


def read_remote_manifest(url: str, storage_options: dict[str, Any]) -> dict[str, Any]:
    """The shard manifest of the folder at `url`, checked as a local one is (stage, file list, safe names)."""
    return parse_manifest(url, fetch_manifest(url, storage_options))


def fetch_manifest(url: str, storage_options: dict[str, Any]) -> bytes:
    fs, root = open_store(url, storage_options)
    with store_errors(f"{url.rstrip('/')}/{MANIFEST}"):
        return fs.cat_file(f"{root.rstrip('/')}/{MANIFEST}")


def parse_manifest(url: str, raw: bytes) -> dict[str, Any]:
    where = f"{url.rstrip('/')}/{MANIFEST}"
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise UserError(f"{where}: not valid JSON ({first_line(e)}); re-upload the shard folder") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{where}: not a megalang manifest (no 'files'); re-upload the shard folder")
    if manifest.get("stage") != "data.tokenize":
        raise UserError(f"{url}: is a '{manifest.get('stage')}' artifact, not token shards; pass the folder written "
                        "by `megalang data tokenize`")
    if manifest.get("format") in ("sft", "classify"):
        raise UserError(f"{url}: {manifest['format']} shard folders are read from a local folder only; copy it "
                        "there and pass that folder as data.shards")
    for name in manifest["files"]:
        check_name(where, name)
    for name in (n for split in manifest.get("splits", {}).values() for n in split.get("files", [])):
        if name not in manifest["files"]:
            raise UserError(f"{where}: split file {name!r} has no SHA-256 in 'files'; the manifest is damaged, re-run "
                            "`megalang data tokenize`")
    return manifest


def check_name(where: str, name: Any) -> str:
    """A file name from an untrusted manifest, refused unless it stays inside the folder (no absolute path, no
    `..`, no backslash or drive that another OS would read as one)."""
    if (not isinstance(name, str) or name.startswith("/") or "\\" in name or ":" in name
            or any(part in ("", ".", "..") for part in name.split("/"))):
        raise UserError(f"{where}: lists {name!r}, a path outside the shard folder; the manifest is damaged or "
                        "crafted, re-create it with `megalang data tokenize`")
    return name


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def cache_key(url: str) -> str:
    """One cache folder per URL: readable, and unique through a hash of the whole URL."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url).strip("-.")[:80]
    return f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    sha256: str


class _Cancelled(Exception):
    """close() stopped a download in flight."""


class ShardCache:
    """The local copies of one remote shard folder's files; owns the read-ahead threads, so close() it.

    `path(name)` returns the local file once its bytes match the manifest, fetching it in the calling thread when
    no read-ahead thread has started it yet (a read never waits behind the queue). `read_ahead(names)` queues
    files for `threads` background threads, in the order given (the order training will first read them).
    """

    def __init__(self, url: str, manifest: dict[str, Any], cache_dir: str | os.PathLike | None = None,
                 storage_options: dict[str, Any] | None = None, threads: int = 2, verify: str = "auto"):
        self.url, self.manifest = url.rstrip("/"), manifest
        self.fs, root = open_store(url, storage_options or {})
        self.root = root.rstrip("/")
        raw = fetch_manifest(url, storage_options or {})
        if parse_manifest(url, raw) != manifest:
            raise UserError(f"{self.url}/{MANIFEST}: changed on the store while the run started; run again")
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        self.folder = Path(cache_dir or default_cache_dir()).expanduser().resolve() / cache_key(self.url)
        self.entries = {n: Entry(n, int(i["size"]), i["sha256"]) for n, i in manifest["files"].items()}
        self.fetched_bytes = 0  # downloaded by this object (a cache hit adds nothing)
        self._lock = threading.Lock()
        self._started: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}
        self._closing = threading.Event()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="shard-read-ahead") if threads > 0 else None
        self._hashes: dict[str, dict[str, Any]] = {}  # integrity-cache entries of what this object verified
        self._prepare(verify)

    # --- setup: what the store and the cache hold ------------------------------------------------------

    def _prepare(self, verify: str) -> None:
        """Make the cache folder, check that the store holds every listed file at its listed size (a missing key
        fails here, before the run starts), and drop cached copies that no longer match the manifest."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"data.cache_dir: cannot create {self.folder} ({e.strerror}); choose a writable "
                            "folder") from None
        with store_errors(self.url):
            listed = {self._relative(info["name"]): int(info.get("size") or 0)
                      for info in self.fs.find(self.root, detail=True).values()}
        for e in self.entries.values():
            if e.name not in listed:
                raise UserError(f"{self.url}/{e.name}: no such key, but {MANIFEST} lists it; upload the whole shard "
                                "folder written by `megalang data tokenize`")
            if listed[e.name] != e.size:
                raise UserError(f"{self.url}/{e.name}: {listed[e.name]} bytes on the store but {MANIFEST} says "
                                f"{e.size}; re-upload the shard folder")
        self._remove_stale_tmp()
        self._check_cached(verify)

    def _relative(self, name: str) -> str:
        """A listed path (as the backend names it: no protocol) relative to the folder."""
        name = name.rstrip("/")
        return name[len(self.root) + 1:] if name.startswith(self.root + "/") else name

    def _remove_stale_tmp(self) -> None:
        """Delete `NAME.<pid>.<thread>.tmp` files of processes that no longer run (a run killed mid-download);
        a live process's (another rank sharing the cache) are left alone."""
        for tmp in self.folder.rglob("*.tmp"):
            parts = tmp.name.rsplit(".", 3)
            if len(parts) == 4 and parts[1].isdigit() and not pid_alive(int(parts[1])):
                tmp.unlink(missing_ok=True)

    def _check_cached(self, mode: str) -> None:
        """Keep the cached copies whose SHA-256 matches (data.verify: auto trusts the hash cache's (size, mtime)
        entries, always re-hashes, never trusts a file of the right size); delete the rest so they are fetched."""
        known = load_cache() if mode == "auto" else {}
        todo = []
        for e in self.entries.values():
            path = self.local(e.name)
            if not path.is_file():
                continue
            st = path.stat()
            hit = known.get(str(path))
            if st.st_size != e.size:
                path.unlink()
            elif mode == "never" or (hit and (hit.get("size"), hit.get("mtime_ns"), hit.get("sha256"))
                                     == (st.st_size, st.st_mtime_ns, e.sha256)):
                self._done(e.name)
            else:
                todo.append((e, path, st))
        for (e, path, st), digest in zip(todo, sha256_files([p for _, p, _ in todo])):
            if digest == e.sha256:
                self._hashes[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
                self._done(e.name)
            else:
                path.unlink()  # damaged on the local disk: fetched again
        self._save_hashes()

    def local(self, name: str) -> Path:
        """Where `name` lives in the cache (checked to stay inside the cache folder, symlinks included)."""
        path = self.folder / check_name(f"{self.url}/{MANIFEST}", name)
        if not path.resolve().is_relative_to(self.folder):
            raise UserError(f"{path}: leads outside the cache folder {self.folder} (a symlink?); remove it")
        return path

    # --- fetching ----------------------------------------------------------------------------------------

    def read_ahead(self, names: list[str]) -> None:
        """Queue `names` for the background threads (nothing without threads); files already cached are skipped."""
        if self._pool is None:
            return
        for name in names:
            if name not in self._started:
                self._pool.submit(self._fetch_once, name)

    def path(self, name: str) -> Path:
        """The verified local copy of `name`, fetched now unless a read-ahead thread has it already."""
        self._raise_first_error()
        self._fetch_once(name)
        event = self._started.get(name)
        if event is None:
            raise RuntimeError(f"{self.url}/{name}: read after close()")
        event.wait()
        self._raise_first_error()
        return self.local(name)

    def _raise_first_error(self) -> None:
        # A damaged file found by read-ahead stops the run at its next read, whichever file that reads.
        if self._errors:
            raise next(iter(self._errors.values()))

    def _done(self, name: str) -> None:
        event = threading.Event()
        event.set()
        self._started[name] = event

    def _fetch_once(self, name: str) -> None:
        with self._lock:
            if name in self._started or self._closing.is_set():
                return
            self._started[name] = event = threading.Event()
        try:
            self._download(self.entries[name])
        except _Cancelled:
            pass
        except BaseException as e:  # noqa: BLE001 - kept for the reader: a background thread has no one to raise to
            self._errors.setdefault(name, e)
        finally:
            event.set()

    def _download(self, e: Entry) -> None:
        """Stream `e` from the store into `NAME.<pid>.<thread>.tmp` while hashing it; rename only when size and
        SHA-256 match the manifest. The per-thread name lets ranks sharing the cache fetch the same file at once."""
        dest = self.local(e.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        url = f"{self.url}/{e.name}"
        digest, size = hashlib.sha256(), 0
        try:
            with store_errors(url):
                src = self.fs.open(f"{self.root}/{e.name}", "rb", block_size=CHUNK)
            with src, open(tmp, "wb") as out, naming(tmp):  # a full local disk is named as such, not as the store
                while True:
                    with store_errors(url):
                        chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    if self._closing.is_set():
                        raise _Cancelled
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            if size != e.size or digest.hexdigest() != e.sha256:
                raise UserError(f"{url}: {size} bytes with SHA-256 {digest.hexdigest()[:12]}…, but {MANIFEST} says "
                                f"{e.size} bytes, {e.sha256[:12]}…; the shard on the store is damaged: re-upload the "
                                "folder or re-run `megalang data tokenize`")
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        st = dest.stat()
        with self._lock:
            self.fetched_bytes += size
            self._hashes[str(dest)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": e.sha256}
        self._save_hashes()

    def _save_hashes(self) -> None:
        """Record verified copies in the integrity hash cache, so a restart with data.verify=auto trusts them."""
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one writer per machine, as data/integrity.py does
            with self._lock:
                save_cache(load_cache(), dict(self._hashes))

    # --- reading -----------------------------------------------------------------------------------------

    def open_split(self, split: str) -> TokenSplit:
        """`split` as a TokenSplit whose token files are fetched on first read. The .idx files (document ends,
        8 bytes a document) are fetched now; their lengths and the token counts come from the manifest."""
        info = self.manifest["splits"].get(split)
        if not info or not info.get("files"):
            raise UserError(f"{self.url}: shard folder has no '{split}' split; re-run `megalang data tokenize`")
        dtype = shard_dtype(Path(self.url), self.manifest)
        bins = [n for n in info["files"] if n.endswith(".bin")]
        for name in bins:
            if name[:-4] + ".idx" not in self.entries or self.entries[name].size % dtype.itemsize:
                raise UserError(f"{self.url}/{name}: no .idx beside it in {MANIFEST}, or a size that is not a "
                                f"multiple of {dtype}; re-run `megalang data tokenize`")
        self.read_ahead([n[:-4] + ".idx" for n in bins])
        ends = [np.fromfile(self.path(n[:-4] + ".idx"), dtype=np.uint64) for n in bins]
        arrays = [CachedArray(self, n, dtype) for n in bins]
        for name, array, end in zip(bins, arrays, ends):
            if (int(end[-1]) if len(end) else 0) != len(array):
                raise UserError(f"{self.url}/{name}: {len(array)} tokens but its .idx ends at "
                                f"{int(end[-1]) if len(end) else 0}; re-run `megalang data tokenize`")
        return TokenSplit(arrays, ends)

    def describe(self) -> dict[str, Any]:
        """This folder as a run manifest's input (store/manifest.py `describe_input`'s form for an artifact)."""
        return {"path": self.url, "kind": "artifact", "stage": self.manifest.get("stage"),
                "manifest_sha256": self.manifest_sha256}

    def close(self) -> None:
        """Stop the read-ahead: queued files are dropped, a download in flight stops at its next chunk."""
        self._closing.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class CachedArray:
    """One shard's tokens as TokenSplit reads them (len and slices), fetched into the cache on the first slice."""

    def __init__(self, cache: ShardCache, name: str, dtype: np.dtype):
        self.cache, self.name, self.dtype = cache, name, dtype
        self._len = cache.entries[name].size // dtype.itemsize
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, key):
        if self._array is None:
            path = self.cache.path(self.name)
            self._array = np.memmap(path, dtype=self.dtype, mode="r") if self._len else np.zeros(0, self.dtype)
        return self._array[key]


def first_read_order(split: TokenSplit, windows: np.ndarray, seq_len: int) -> list[int]:
    """Indices of `split`'s files in the order reading `windows` (window numbers, in reading order) first touches
    them, then the files it never touches: the order in which read-ahead should fetch them."""
    starts = np.asarray(split.starts[:-1], dtype=np.int64)
    touched = np.searchsorted(starts, np.asarray(windows, dtype=np.int64) * seq_len, side="right") - 1
    _, first = np.unique(touched, return_index=True)
    order = [int(i) for i in touched[np.sort(first)]]
    return order + [i for i in range(len(starts)) if i not in set(order)]
