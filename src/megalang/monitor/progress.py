"""What a long-running stage shows a person: a rich progress bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class LineReporter:
    """One plain line per logged step on stderr (stdout stays free for the stage's JSON result)."""

    def __init__(self, total: int, start: int = 0):
        self.total = total
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False)

    def update(self, step: int, record: dict[str, Any]) -> None:
        parts = [f"step {step}/{self.total}"]
        for key, fmt in (("loss", ".4f"), ("val_loss", ".4f"), ("lr", ".2e"), ("grad_norm", ".3f"),
                         ("tokens_per_s", ",.0f"), ("mfu", ".1%")):
            if record.get(key) is not None:
                parts.append(f"{key} {record[key]:{fmt}}")
        self.message("  ".join(parts))

    def __enter__(self) -> LineReporter:
        return self

    def __exit__(self, *exc) -> None:
        pass


class BarReporter(LineReporter):
    """A live bar with the latest loss and tokens/s; messages print above it."""

    def __init__(self, total: int, start: int = 0):
        super().__init__(total, start)
        self.console = Console(highlight=False)
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, record: dict[str, Any]) -> None:
        info = f"loss {record['loss']:.4f}" if record.get("loss") is not None else ""
        if record.get("val_loss") is not None:
            info += f"  val {record['val_loss']:.4f}"
        if record.get("tokens_per_s"):
            info += f"  {record['tokens_per_s']:,.0f} tok/s"
        self.progress.update(self.task, completed=step, info=info)

    def __enter__(self) -> BarReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def make_reporter(total: int, start: int = 0, progress: bool = True) -> LineReporter:
    """A bar when asked for and stdout is a terminal; plain lines for logs, CI and pipes."""
    if progress and sys.stdout.isatty():
        return BarReporter(total, start)
    return LineReporter(total, start)
