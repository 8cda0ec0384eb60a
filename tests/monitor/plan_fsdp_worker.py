"""One rank of the FSDP2 planner-accuracy run (launched by test_plan_accuracy.py through torchrun):
measure a debug step's peak bytes and FLOPs on this rank and write them to OUT.RANK.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from megalang.train import trainer
from monitor.conftest import run_config
from monitor.measure import measure_step


def main(shards: str, run_dir: str, out: str, seq_len: str, batch: str) -> None:
    seq, mbs = int(seq_len), int(batch)
    cfg = run_config(Path(shards), Path(run_dir), parallel={"dp_shard": 2},
                     train={"seq_len": seq, "micro_batch_size": mbs, "global_batch_tokens": 2 * seq * mbs},
                     metrics={"system": False, "report": False})
    t = trainer.setup(cfg)
    try:
        peak, flops = measure_step(t, fsdp=True)
        Path(f"{out}.{t.group.rank}.json").write_text(json.dumps({"peak": peak, "flops": flops}))
    finally:
        t.sink.close()
        t.group.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
