"""TensorBoard backend: every numeric value of a record as a scalar under its own name (`metrics.tensorboard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SKIP = {"step", "time"}


class TensorBoardBackend:
    """`torch.utils.tensorboard.SummaryWriter` on `RUN/tensorboard`; `tensorboard --logdir RUN` reads it."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            from megalang.errors import UserError

            raise UserError("metrics.tensorboard=true needs the tensorboard package: pip install 'megalang[monitor]'") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key not in SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, global_step=step, walltime=values.get("time"))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
