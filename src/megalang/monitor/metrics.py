"""The one metrics sink every stage logs through: JSON lines in `RUN/metrics.jsonl`, plus pluggable backends.

TensorBoard and Prometheus plug in as `MetricsBackend`s; the JSON-lines file is always written.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

from megalang.errors import naming


class MetricsBackend(Protocol):
    """Anything that receives the same records as metrics.jsonl (TensorBoard writer, Prometheus gauges)."""

    def write(self, step: int, values: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsSink:
    """Appends one JSON object per `log()` call to `path`, flushed at once so a crash loses no logged line.

    Opened in append mode: a resumed run continues the file, and `read_metrics` lets the later record of a
    step win. `enabled=False` (non-zero ranks) makes every call a no-op.
    """

    def __init__(self, path: str | os.PathLike, backends: list[MetricsBackend] | None = None, enabled: bool = True):
        self.path = Path(path)
        self.backends = list(backends or [])
        self.enabled = enabled
        self._file = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torn = not _ends_cleanly(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
            if torn:  # a killed writer left half a line; end it so the next record starts on its own line
                self._file.write("\n")

    def log(self, step: int, **values: Any) -> dict[str, Any]:
        record = {"step": int(step), **{k: _plain(v) for k, v in values.items()}, "time": round(time.time(), 3)}
        if not self.enabled:
            return record
        # allow_nan=False keeps the file strict JSON; _plain already turned NaN/inf into null.
        with naming(self.path):  # a full disk is reported against this file
            self._file.write(json.dumps(record, allow_nan=False) + "\n")
            self._file.flush()
        for backend in self.backends:
            backend.write(record["step"], record)
        return record

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            with naming(self.path):
                file.close()
        for backend in self.backends:
            backend.close()
        self.backends = []

    def __enter__(self) -> MetricsSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_cleanly(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(value: Any) -> Any:
    """JSON-safe scalars: tensors and numpy numbers become Python numbers; NaN and inf become null."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """{step: record}, in step order. Records of the same step merge with later values winning (a resume
    re-logs the steps after its checkpoint). A torn last line (killed mid-write) is skipped."""
    records: dict[int, dict[str, Any]] = {}
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.setdefault(record["step"], {}).update(record)
    return dict(sorted(records.items()))
