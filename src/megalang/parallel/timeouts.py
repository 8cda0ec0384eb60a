"""Collective timeouts (issue #4, promise 8): a rank that stalls or dies fails the job with a message that
names the rank and `parallel.timeout_s`, instead of leaving the others blocked in a collective forever."""

from __future__ import annotations

import datetime
import functools
import os
import re

from megalang.errors import UserError

# gloo: "Timed out waiting 5000ms for recv operation to complete"; NCCL's watchdog: "... collective operation
# timeout ..."; the c10d store (barriers of DCP, monitored_barrier): "Socket Timeout" / "timed out after".
# Not gloo's "timed out connecting" at startup: that is an unreachable peer, not a stalled one.
_TIMEOUT = re.compile(r"timed out waiting|operation timeout|socket timeout|timed out after", re.IGNORECASE)
_SOURCE = re.compile(r"^\[[^\]]*\]\s*")  # gloo's "[.../unbound_buffer.cc:81] " prefix


def collective_timeout(seconds: float) -> datetime.timedelta:
    """What `init_process_group(timeout=...)` takes. gloo applies it to every collective and barrier; NCCL's
    watchdog aborts the process when one runs longer."""
    return datetime.timedelta(seconds=seconds)


class CollectiveTimeout(UserError):
    """A collective (or barrier) did not complete within parallel.timeout_s on this rank."""


def is_collective_timeout(error: BaseException) -> bool:
    return isinstance(error, RuntimeError) and bool(_TIMEOUT.search(str(error)))


def timeout_message(rank: str, seconds: float, error: BaseException) -> str:
    detail = _SOURCE.sub("", str(error).strip().splitlines()[0])[:200]
    return (
        f"rank {rank}: a collective with the other ranks did not complete within parallel.timeout_s={seconds:g} s "
        f"({detail}); another rank stalled or died (see its log above). If steps or checkpoint saves legitimately "
        "take longer, raise parallel.timeout_s"
    )


def explain_collective_timeouts(train_fn):
    """Decorate `train(cfg)`: a collective timeout becomes a CollectiveTimeout (one line, exit code 2 from the
    CLI, rank and field named) instead of a C++ traceback. The rank comes from the launcher's RANK: by the time
    the error arrives here the process group is already destroyed."""

    @functools.wraps(train_fn)
    def wrapper(cfg, *args, **kwargs):
        try:
            return train_fn(cfg, *args, **kwargs)
        except RuntimeError as e:
            if not is_collective_timeout(e) or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                raise
            raise CollectiveTimeout(timeout_message(os.environ.get("RANK", "?"), cfg.parallel.timeout_s, e)) from e

    return wrapper
