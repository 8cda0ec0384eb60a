"""The one error type for mistakes a user can fix; `cli.py` prints it in one line and exits 2."""


class UserError(Exception):
    """A bad path, file, value or incompatible artifact. The message names it and says what to do.

    Everything that is not a UserError is a bug in megalang and may show a traceback.
    """

    def __init__(self, message: str):
        # One line, always: multi-line messages get lost in log scrapers and job schedulers.
        super().__init__(" ".join(str(message).split()))
