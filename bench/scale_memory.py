"""Per-rank training-state memory and throughput: one process vs DDP vs FSDP2 (ZeRO-3) on 2 CPU ranks.

Same model, data and global batch for all three; `state_bytes` is parameters + gradients + AdamW moments
held by one rank (its shards), measured by the trainer at the last step; `peak_rss_bytes` the largest
rank's resident-set high-water mark (includes the Python runtime and libraries).
Prints one JSON line. Usage: python bench/scale_memory.py [preset] [steps]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_tiny import synthetic_shards  # noqa: E402  (the same synthetic shards as the throughput bench)


def run(shards: Path, run_dir: Path, preset: str, steps: int, nproc: int, *parallel: str) -> dict:
    common = [f"model.preset={preset}", f"data.shards={shards}", f"run.dir={run_dir}", f"train.max_steps={steps}",
              "train.seq_len=128", "train.micro_batch_size=4", "train.global_batch_tokens=1024",
              "schedule.warmup_steps=1", "train.log_every=1", "train.progress=false", "train.device=cpu",
              "checkpoint.every=0", *parallel]
    cmd = [sys.executable, "-m", "megalang", "launch", f"--nproc={nproc}", "--", "train", *common]
    subprocess.run(cmd, check=True, capture_output=True)
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"state_bytes": last["state_bytes"], "peak_rss_bytes": last["peak_memory_bytes"],
            "tokens_per_s": summary["tokens_per_s"], "final_loss": last["loss"]}


def main() -> None:
    preset = sys.argv[1] if len(sys.argv) > 1 else "tiny"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic_shards(Path(tmp), 200_000)
        results = {
            "single": run(shards, Path(tmp) / "single", preset, steps, 1),
            "ddp2": run(shards, Path(tmp) / "ddp", preset, steps, 2, "parallel.dp_replicate=2", "parallel.dp_shard=1"),
            "fsdp2": run(shards, Path(tmp) / "fsdp", preset, steps, 2, "parallel.dp_shard=2"),
        }
    ratio = results["fsdp2"]["state_bytes"] / results["single"]["state_bytes"]
    print(json.dumps({"bench": "scale_memory", "preset": preset, "steps": steps, **results,
                      "fsdp2_state_ratio": round(ratio, 4)}))


if __name__ == "__main__":
    main()
