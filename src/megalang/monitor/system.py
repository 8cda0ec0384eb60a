"""Host telemetry through psutil: this process's CPU use and resident memory."""

from __future__ import annotations

from typing import Any


class HostSampler:
    """CPU use of this process since the previous sample (100 = one core busy) and its resident memory."""

    def __init__(self):
        try:
            import psutil
        except ImportError:
            self.process = None
            return
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the interval

    def sample(self) -> dict[str, Any]:
        if self.process is None:
            return {}
        return {"cpu_percent": self.process.cpu_percent(None), "rss_bytes": self.process.memory_info().rss}

