"""`launcher=ray`: run the ordinary trainer as `workers` Ray Train ranks (TorchTrainer), restarted on failure.

Ray only places the workers, wires torch.distributed between them (gloo on CPU, NCCL on GPU) and restarts
the whole group when one dies (FailureConfig). Every worker calls `train(cfg)`, which resumes from the
newest complete checkpoint in `RUN/checkpoints/` by itself, so a restart continues the run instead of
starting over. That is why RUN must be one folder that every node sees at the same path (a shared
filesystem); Ray's own bookkeeping goes to `RUN/ray/`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from megalang.config import RayConfig, RunConfig
from megalang.errors import UserError

RAY_DIR = "ray"  # Ray Train's storage_path inside the run folder
RAY_RUN_NAME = "train"  # one name per run folder: re-running the same command reuses it
# Crash-test hook, "RANK:STEP": the process of that worker dies (os._exit) right after STEP, once per run
# folder (a marker file under RUN/ray/ records it, so the restarted group runs through).
KILL_ENV = "MEGALANG_RAY_KILL_WORKER"


def train_on_ray(cfg: RunConfig) -> dict[str, Any]:
    """Train `cfg` on `cfg.workers` Ray Train workers; return rank 0's summary (as `train` does)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            "launcher=ray starts its own workers: run `megalang train … launcher=ray` as one process, not under "
            "torchrun or `megalang launch` (or drop launcher=ray there)"
        )
    ray = import_ray()
    cfg = with_absolute_paths(cfg)
    run_dir = Path(cfg.run.dir)
    started_here = maybe_init_ray(ray, cfg.ray)
    try:
        trainer = build_torch_trainer(cfg, run_dir, use_gpu=wants_gpu(ray, cfg))
        result = fit(trainer, cfg)
    finally:
        if started_here:
            ray.shutdown()
    return summary_from(result)


def import_ray():
    try:
        import ray
        import ray.train  # noqa: F401  (the [train] extra: TorchTrainer and its configs)
    except ImportError:
        raise UserError("launcher=ray needs Ray Train; install it with pip install 'megalang[ray]'") from None
    return ray


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """Workers start in Ray's own working folder, so relative run/data paths must be resolved here."""
    data = cfg.model_dump()
    data["run"]["dir"] = str(Path(cfg.run.dir).resolve())
    if cfg.data.shards and "://" not in cfg.data.shards:
        data["data"]["shards"] = str(Path(cfg.data.shards).resolve())
    return RunConfig.model_validate(data)


def maybe_init_ray(ray, ray_cfg: RayConfig) -> bool:
    """Join the cluster at `ray.address`, or start a local one; True when this call started Ray (and so
    must shut it down). An already-initialised Ray (a notebook, a test) is used as it is."""
    if ray.is_initialized():
        return False
    address = ray_cfg.address or os.environ.get("RAY_ADDRESS")  # Ray's own variable, as `ray job submit` sets
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as e:
            raise UserError(f"ray.address={address}: cannot connect to a Ray cluster ({e})") from None
    else:
        # "local": a new Ray of our own, never a `ray start` cluster that happens to run on this machine.
        ray.init(address="local", num_cpus=ray_cfg.num_cpus, include_dashboard=False)
    return True


def wants_gpu(ray, cfg: RunConfig) -> bool:
    """train.device decides; `auto` uses GPUs when the cluster has any."""
    if cfg.train.device != "auto":
        return cfg.train.device == "cuda"
    return ray.cluster_resources().get("GPU", 0) > 0


def build_torch_trainer(cfg: RunConfig, run_dir: Path, use_gpu: bool):
    from ray.train import FailureConfig, ScalingConfig
    from ray.train import RunConfig as RayRunConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = {"CPU": cfg.ray.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        worker_loop,
        train_loop_config={"run_config": cfg.model_dump(mode="json"), "kill": kill_request(run_dir)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo", timeout_s=int(cfg.parallel.timeout_s)),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RayRunConfig(
            name=RAY_RUN_NAME,
            storage_path=str(run_dir / RAY_DIR),
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
        ),
    )


def fit(trainer, cfg: RunConfig):
    """trainer.fit(), with the error of a run that used up its restarts as one line."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as e:
        raise UserError(
            f"Ray Train stopped after ray.max_failures={cfg.ray.max_failures} restarts ({failure_cause(e)}); the "
            f"newest complete checkpoint in {cfg.run.dir}/checkpoints is kept: fix the cause and re-run to resume"
        ) from e


def failure_cause(error: Exception) -> str:
    """Each failed rank's error in a few words: the last line of its message (Ray's carry whole tracebacks)."""
    failures = getattr(error, "worker_failures", None) or {"?": getattr(error, "controller_failure", error)}
    parts = []
    for rank, exc in sorted(failures.items(), key=lambda item: str(item[0])):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        parts.append(f"rank {rank}: {type(exc).__name__}: {lines[-1][:200] if lines else ''}")
    return "; ".join(parts)


def summary_from(result) -> dict[str, Any]:
    """Rank 0's return value from `run_worker`: its summary, or the UserError every rank stopped on."""
    value = result.return_value
    if "user_error" in value:
        raise UserError(value["user_error"])
    return value["summary"]


# --- on each worker ---------------------------------------------------------------------------------


def worker_loop(config: dict[str, Any]) -> dict[str, Any]:
    """One Ray Train worker: torch.distributed is already initialised, so `train` runs as one rank of many."""
    import ray.train

    cfg = RunConfig.model_validate(config["run_config"])
    return run_worker(cfg, ray.train.get_context().get_world_rank(), config.get("kill"))


def run_worker(cfg: RunConfig, rank: int, kill: dict[str, Any] | None = None) -> dict[str, Any]:
    """`train(cfg)` on this rank, its summary (or its UserError) as the return value.

    A UserError comes back as a value, not an exception: every rank hits the same bad config, and a
    raised error would make Ray restart the group `ray.max_failures` times for nothing.
    """
    from megalang.train.trainer import train

    marker = maybe_arm_kill(kill, rank)
    try:
        return {"summary": train(cfg)}
    except UserError as e:
        return {"user_error": str(e)}
    except SystemExit:
        if marker is None:
            raise
        die(marker)


def kill_request(run_dir: Path) -> dict[str, Any] | None:
    """The crash-test request from `MEGALANG_RAY_KILL_WORKER=RANK:STEP` on the driver, if any."""
    raw = os.environ.get(KILL_ENV)
    if not raw:
        return None
    rank, sep, step = raw.partition(":")
    if not (sep and rank.isdigit() and step.isdigit() and int(step) > 0):
        raise UserError(f"{KILL_ENV}={raw!r}: expected RANK:STEP, for example 1:6")
    marker = run_dir / RAY_DIR / f"killed-rank{rank}-step{step}"
    return {"rank": int(rank), "step": int(step), "marker": str(marker)}


def maybe_arm_kill(request: dict[str, Any] | None, rank: int) -> Path | None:
    """On the chosen rank, and only if it has not died yet, ask the trainer to stop after the step (its
    own fault hook, FAULT_ENV); `run_worker` then ends the process. Returns the marker to write."""
    from megalang.train.faults import STOP_AT_ENV as FAULT_ENV

    if request is None or request["rank"] != rank or Path(request["marker"]).exists():
        return None
    os.environ[FAULT_ENV] = str(request["step"])
    return Path(request["marker"])


def die(marker: Path) -> None:
    """Record the kill (so the restarted group runs through), then end the process the hard way, as a
    crashed node or the OOM killer would: no exception handling, no clean shutdown of the process group."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "w") as f:
        f.flush()
        os.fsync(f.fileno())
    os._exit(1)
