"""The `megalang` command: parse arguments, build the stage config, call the stage function, print errors.

Heavy imports (torch, transformers) happen inside the commands so `megalang --help` stays instant. Each module
registers its commands on the apps in cli/app.py when imported here.
"""

from __future__ import annotations

import os
import sys

# Registration order is the order `megalang --help` lists the commands in.
from megalang.cli import artifacts, data, evaluate, federated, run  # noqa: F401, I001  (not sorted: see above)
from megalang.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    # transformers' per-call progress bars ("Loading weights", "Writing model shards") drown the stage output.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    app(prog_name="megalang")


if __name__ == "__main__":
    sys.exit(main())
