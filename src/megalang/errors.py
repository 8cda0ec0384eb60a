"""The one error type for mistakes a user can fix; `cli/app.py` prints it in one line and exits 2."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserError(Exception):
    """A bad path, file, value or incompatible artifact. The message names it and says what to do.

    Everything that is not a UserError is a bug in megalang and may show a traceback.
    """

    def __init__(self, message: str):
        # One line, always: multi-line messages get lost in log scrapers and job schedulers.
        super().__init__(" ".join(str(message).split()))


# An OSError with one of these errnos comes from the user's environment (disk space, permissions, a file where a
# folder should be), not from a bug: `from_os_error` turns it into a UserError naming the path and the fix.
_OS_HINTS = {
    "ENOSPC": "the disk is full: free space or write elsewhere",
    "EDQUOT": "the disk quota is used up: free space or write elsewhere",
    "EFBIG": "the file is larger than this filesystem or `ulimit -f` allows: write elsewhere or raise the limit",
    "EROFS": "the filesystem is read-only: choose a writable folder",
    "EACCES": "permission denied: choose a folder you can write to",
    "EPERM": "not permitted here: choose a folder you can write to",
    "EEXIST": "a file is in the way where a folder is expected: move it or choose another path",
    "ENOTDIR": "a file is in the way where a folder is expected: move it or choose another path",
    "EISDIR": "a folder is in the way where a file is expected: move it or choose another path",
}


def from_os_error(e: OSError) -> UserError | None:
    """The UserError for an environment problem (see `_OS_HINTS`), or None: any other OSError is a bug."""
    import errno
    import os

    name = errno.errorcode.get(e.errno or -1)
    if name not in _OS_HINTS:
        return None
    where = e.filename if e.filename is not None else "output"
    return UserError(f"{where}: {e.strerror or os.strerror(e.errno)} ({_OS_HINTS[name]})")


@contextlib.contextmanager
def naming(path) -> Iterator[None]:
    """Attach `path` to an OSError raised inside (a failed `file.write` carries no file name), so a full disk
    is reported against the file being written."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:  # already named, or not a system call's error
            raise
        raise type(e)(e.errno, e.strerror, str(path)) from None
