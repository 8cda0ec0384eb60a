"""Setting up a run: check everything that can be wrong before touching the run folder, then build the
model, optimizer, loader and objective, prepare the run folder and resume from the newest checkpoint."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang.config import RunConfig
from megalang.data.integrity import verify_shards
from megalang.data.loader import SampleLoader, num_windows
from megalang.data.remote import ShardCache, first_read_order, is_remote
from megalang.data.shards import TokenSplit, open_split
from megalang.errors import UserError
from megalang.model.build import build_model, special_ids
from megalang.model.presets import get_preset
from megalang.monitor.flops import flops_per_token, maybe_warn_emulated_bf16, run_peak_flops
from megalang.monitor.live import build_run_monitor
from megalang.monitor.metrics import MetricsSink
from megalang.parallel.build import build_parallel_model
from megalang.parallel.distributed import (
    ProcessGroup,
    barrier,
    local_bytes,
    maybe_init_process_group,
)
from megalang.parallel.mesh import ParallelDims, build_mesh, data_rank, resolve_dims
from megalang.parallel.parallelize import parallelize
from megalang.store.checkpoints import read_run_config, remove_stale_tmp
from megalang.store.files import fsync_dir, sha256_file, write_json_atomic
from megalang.store.manifest import MANIFEST
from megalang.store.run_dir import RunDir
from megalang.train import finetune
from megalang.train import resume_compat as compat
from megalang.train.checkpoint import (
    Checkpointer,
    check_shared_memory,
    load_checkpoint,
    resume_checkpoint,
)
from megalang.train.faults import FaultPlan
from megalang.train.health import build_health_guard
from megalang.train.loss import cross_entropy
from megalang.train.objectives import build_objective, document_eos
from megalang.train.optim import build_optimizer, build_scheduler
from megalang.train.state import Trainer
from megalang.train.validate import evaluate_lm_loss

READ_AHEAD_WINDOWS = 1 << 16  # sample positions looked ahead to order the read-ahead (then the rest in file order)


def async_writer(cfg: RunConfig, device: torch.device) -> str:
    """checkpoint.async_writer resolved: `auto` is a writer process beside a GPU (the training loop keeps the
    GIL to itself and idle cores absorb the write) and a thread on a CPU, where training keeps every core busy
    and a process measured no smaller stall (docs/benchmarks.md) but costs a spawn and shared memory."""
    if cfg.checkpoint.async_writer != "auto":
        return cfg.checkpoint.async_writer
    return "process" if device.type == "cuda" else "thread"


def writer_process(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.checkpoint.async_save and async_writer(cfg, device) == "process"


def setup(cfg: RunConfig, faults: FaultPlan = FaultPlan()) -> Trainer:
    """Check everything that can be wrong before touching the run folder, then build the run."""
    shards, manifest = finetune.prepare_data(cfg)  # data.shards, or data.sft tokenized with the model's tokenizer
    if not cfg.model.pretrained:
        get_preset(cfg.model.preset)  # an unknown name fails here, before the run folder exists
    device = pick_device(cfg)
    group = maybe_init_process_group(device.type, cfg.parallel.timeout_s, alone=writer_process(cfg, device))
    maybe_warn_emulated_bf16(device, cfg.train.precision, enabled=group.rank == 0)  # fp32 is faster there
    cache = None
    try:
        cache = open_shard_cache(cfg, shards, manifest)  # a data.shards URL: missing keys fail here
        manifest = with_local_tokenizer(cfg, manifest)  # data.tokenizer: the same tokenizer at another path
        return build_trainer(cfg, shards, manifest, device, group, faults, cache)
    except BaseException:
        group.close()  # a group we created must not outlive a failed setup (in-process callers retry)
        if cache is not None:
            cache.close()
        raise


def open_shard_cache(cfg: RunConfig, shards: str, manifest: dict[str, Any]) -> ShardCache | None:
    """The local cache of a data.shards URL (data/remote.py); None for a local folder."""
    if not is_remote(shards):
        return None
    return ShardCache(shards, manifest, cfg.data.cache_dir, cfg.data.storage_options, cfg.data.read_ahead,
                      cfg.data.verify)


def with_local_tokenizer(cfg: RunConfig, manifest: dict[str, Any]) -> dict[str, Any]:
    """The shard manifest with `tokenizer_path` at data.tokenizer when it is given (a derived view: the manifest on
    disk and the config stay as they are), refused unless it is the tokenizer that made the shards."""
    if not cfg.data.tokenizer:
        return manifest
    folder = Path(cfg.data.tokenizer).expanduser().resolve()
    if not (folder / MANIFEST).is_file():
        raise UserError(f"data.tokenizer={cfg.data.tokenizer}: no {MANIFEST} there; pass the folder written by "
                        "`megalang tokenizer train`")
    digest, expected = sha256_file(folder / MANIFEST), manifest.get("tokenizer_sha256")
    if expected and digest != expected:
        raise UserError(f"data.tokenizer={cfg.data.tokenizer}: its {MANIFEST} has SHA-256 {digest[:12]}…, the shards "
                        f"were made with {expected[:12]}…; pass a copy of the tokenizer folder that made them")
    return {**manifest, "tokenizer_path": str(folder)}


def build_trainer(cfg: RunConfig, shards: str, manifest: dict[str, Any], device: torch.device, group: ProcessGroup,
                  faults: FaultPlan = FaultPlan(), cache: ShardCache | None = None) -> Trainer:
    """The run on this process: layout, loader, run folder, model, optimizer, then resume if there is one.
    `cache`: the local copies of a data.shards URL (verified as they are fetched; the Trainer closes it)."""
    dims = resolve_parallel(cfg, manifest, group.world)
    dp_world = dims.dp if dims else 1
    accum = grad_accum_steps(cfg, dp_world)
    finetune.check_finetune(cfg, device, group.world, accum)
    run_config = resolved_run_config(cfg, manifest, group.world, accum, dims, shards)
    run_dir = Path(cfg.run.dir)
    checkpointer = Checkpointer(run_dir, cfg.checkpoint.keep, cfg.checkpoint.async_save, async_writer(cfg, device),
                                cfg.parallel.timeout_s, faults)
    resume_from = find_resume(cfg, run_dir, run_config, checkpointer.verified)
    if cache is None:
        verify_shards(shards, manifest, cfg.data.verify, group.rank, group.world)  # data.verify; exit 2 if damaged
    mesh = build_mesh(dims, device.type) if dims else None
    dp_rank = data_rank(mesh, dims)[0] if dims else 0
    loader = finetune.build_loader(cfg, shards, manifest, dp_rank, dp_world) or SampleLoader(
        open_token_split(shards, "train", manifest, cache), cfg.train.seq_len, cfg.train.micro_batch_size, cfg.seed,
        dp_rank, dp_world, curriculum=manifest.get("curriculum") if cfg.data.curriculum else None)
    if group.rank == 0:
        prepare_run_dir(cfg, run_dir, manifest, shards)
    barrier()  # the run folder exists (and is clean) before any rank touches it
    seed_everything(cfg.seed)
    if dims is None:
        model = build_model(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest), cfg.seed,
                            device, quantization=finetune.quantization(cfg, device))  # QLoRA: a 4-bit base
        parallelize(model, None, cfg.train)
        model = finetune.wrap_model(model, cfg)  # LoRA adapters (lora.rank > 0)
        built = None
    else:
        built = build_parallel_model(cfg, manifest["vocab_size"], special_ids(manifest), device, mesh, dims, accum,
                                     loss_fn=cross_entropy)  # a pipeline's last stage: the plain logits loss
        model = built.model
    optimizer = build_optimizer(model, cfg.optimizer, cfg.train.optimizer)
    if writer_process(cfg, device):  # weights, and AdamW's two moments for the trainable ones, per rank on this node
        check_shared_memory(sum(local_bytes(p) * (3 if p.requires_grad else 1) for p in model.parameters())
                            * int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    ft = None
    if finetune.is_active(cfg, manifest):  # objective, DP-SGD optimizer wrapper, SFT counts
        optimizer, ft = finetune.build_finetune(cfg, manifest, model, optimizer, loader, device)
    objective = build_objective(cfg, manifest, device)  # after DP's wrapping, as before: a teacher loads here
    val_split = open_val_split(cfg, shards, manifest, cache)
    validate = finetune.validator(val_split) or evaluate_lm_loss
    monitor = build_run_monitor(cfg.metrics, run_dir, device, enabled=group.rank == 0)
    t = Trainer(
        cfg=cfg, run_dir=run_dir, device=device, model=model, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg),
        scaler=torch.amp.GradScaler("cuda") if cfg.train.precision == "fp16" else None,
        loader=loader, val_split=val_split, objective=objective, validate=validate,
        sink=MetricsSink(RunDir(run_dir).metrics, backends=monitor.backends, enabled=group.rank == 0),
        run_config=run_config, accum=accum, monitor=monitor,
        flops_per_token=flops_per_token(model.config, cfg.train.seq_len),
        peak=run_peak_flops(device, cfg.train.precision, group.world),  # all ranks: tokens/s counts all of theirs
        group=group, dims=dims, mesh=mesh, finetune=ft, health=build_health_guard(cfg.health), faults=faults,
        checkpointer=checkpointer, document_eos=document_eos(cfg, manifest), shard_cache=cache,
    )
    if built is not None:
        t.schedule, t.first_stage, t.last_stage = built.schedule, built.first_stage, built.last_stage
    if resume_from is not None:
        resume(t, resume_from)
    if cache is not None:
        maybe_read_ahead(cache, loader, val_split)
    return t


def maybe_read_ahead(cache: ShardCache, loader: Any, val_split: TokenSplit | None) -> None:
    """Queue the URL's token files for the read-ahead threads: the train files in the order this rank's sample
    order first reads them from the resume position (a pure function of seed, epoch and position), then val's."""
    if not isinstance(loader, SampleLoader):
        return
    start = loader.consumed % loader.num_samples
    windows = loader.permutation(loader.epoch)[start:start + READ_AHEAD_WINDOWS]
    train = [loader.split.bins[i].name for i in first_read_order(loader.split, windows, loader.seq_len)]
    cache.read_ahead(train + [b.name for b in (val_split.bins if val_split else [])])


def resume(t: Trainer, path: Path) -> None:
    state = load_checkpoint(path, t.model, t.optimizer, t.scheduler, t.loader, t.checkpointer.verified)
    if t.scaler and "scaler" in state:
        t.scaler.load_state_dict(state["scaler"])
    t.health.load_state_dict(state.get("health"))  # the same skip decisions as an uninterrupted run
    diff = compat.changes(read_run_config(path), t.run_config)  # benign changes only: refused ones stopped setup
    if compat.optimizer_changed(diff):
        compat.apply_optimizer_changes(t.optimizer, t.scheduler, t.cfg)  # the checkpoint restored the old ones
    if t.group.rank == 0:
        compat.record_resume(t.run.resumes, path, diff)  # printed, and appended to RUN/resumes.jsonl
    t.step, t.tokens_seen, t.resumed_from = state["step"], state["tokens_seen"], state["step"]


def resolve_parallel(cfg: RunConfig, manifest: dict[str, Any], world: int) -> ParallelDims | None:
    """The parallel layout (None: one process); a layout that cannot split this model fails here."""
    if world == 1:
        resolve_dims(cfg.parallel, 1)  # fixed degrees > 1 on one process are a mistake worth naming
        return None
    from megalang.model.build import build_llama_config

    model_config = None
    if not cfg.model.pretrained:
        model_config = build_llama_config(cfg.model, manifest["vocab_size"], cfg.train.seq_len, special_ids(manifest))
    return resolve_dims(cfg.parallel, world, model_config)


def pick_device(cfg: RunConfig) -> torch.device:
    wanted = cfg.train.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if cfg.train.precision == "fp16" and device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA device (loss scaling); use bf16 or fp32 on CPU")
    return device


@contextlib.contextmanager
def deterministic_kernels(enabled: bool) -> Iterator[None]:
    """train.deterministic: deterministic kernels only, for the run, then torch's previous setting back (an
    in-process caller runs on as before). cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it creates a handle, so it is
    set before the run's first CUDA matmul; an op with no deterministic kernel raises instead of varying between
    runs. On a CPU the kernels megalang uses are deterministic already."""
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    set_workspace = "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_workspace:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
        if set_workspace:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def grad_accum_steps(cfg: RunConfig, world: int) -> int:
    """Micro-batches per optimizer step so that each step sees `train.global_batch_tokens`."""
    tc = cfg.train
    per_micro = tc.micro_batch_size * tc.seq_len * world
    gbt = tc.global_batch_tokens or per_micro
    if gbt % per_micro:
        raise UserError(
            f"train.global_batch_tokens={gbt} is not a multiple of train.micro_batch_size × train.seq_len × "
            f"data-parallel ranks = {tc.micro_batch_size} × {tc.seq_len} × {world} = {per_micro}"
        )
    return gbt // per_micro


def resolved_run_config(cfg: RunConfig, manifest: dict[str, Any], world: int, accum: int,
                        dims: ParallelDims | None = None, shards: str | None = None) -> dict[str, Any]:
    """The config saved with every checkpoint, plus the values derived from it and from the data (`shards`: the
    folder trained on, data.shards or where data.sft was tokenized)."""
    tc = cfg.train
    dp = dims.dp if dims else world
    return {
        "config": cfg.model_dump(mode="json"),
        "derived": {
            "global_batch_tokens": tc.micro_batch_size * tc.seq_len * dp * accum,
            "world_size": world,
            "parallel": dims.degrees() if dims else None,
            "grad_accum": accum,
            "vocab_size": manifest["vocab_size"],
            "tokenizer_sha256": manifest.get("tokenizer_sha256"),
            "tokenizer_path": manifest.get("tokenizer_path"),
            "shards": shards_location(shards or cfg.data.shards),
            "shards_content_sha256": compat.shards_fingerprint(manifest),  # a moved copy of the same tokens resumes
        },
    }


def shards_location(shards: str) -> str:
    """How the run names its shard folder: a URL as given, a local folder as an absolute path."""
    return shards.rstrip("/") if is_remote(shards) else str(Path(shards).resolve())


def find_resume(cfg: RunConfig, run_dir: Path, run_config: dict[str, Any], verified: set[tuple]) -> Path | None:
    """The checkpoint to resume from (None: start fresh); refuse one this config cannot continue. `verified`:
    the checkpointer's record of what this process checked, so loading it next does not hash it again."""
    latest = resume_checkpoint(run_dir, cfg.checkpoint.resume_step, verified)  # newest complete, or exactly resume_step
    if latest is None:
        return None
    if cfg.checkpoint.resume == "never":
        raise UserError(
            f"{run_dir} already has checkpoints but checkpoint.resume=never; choose another run.dir or remove it"
        )
    compat.check_resume_compatible(latest, read_run_config(latest), run_config)  # refused keys, named
    return latest


def open_token_split(shards: str, split: str, manifest: dict[str, Any], cache: ShardCache | None) -> TokenSplit:
    """A split of the local shard folder, or of a data.shards URL through its cache (files fetched on first read)."""
    return cache.open_split(split) if cache is not None else open_split(shards, split, manifest)


def open_val_split(cfg: RunConfig, shards: str, manifest: dict[str, Any],
                   cache: ShardCache | None = None) -> TokenSplit | None:
    """The val split, or None (val loss skipped) when the shards hold no window of it."""
    if finetune.is_sft(manifest) or finetune.is_classify(manifest):
        return finetune.open_val(cfg, shards, manifest)  # rows (or labelled examples) built as in training
    if not manifest["splits"].get("val", {}).get("files"):
        return None
    split = open_token_split(shards, "val", manifest, cache)
    return split if num_windows(split, cfg.train.seq_len) else None


def seed_everything(seed: int) -> None:
    """Init and data order use their own generators; this seeds dropout and any third-party randomness."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


# --- the run folder ---------------------------------------------------------------------------------


def prepare_run_dir(cfg: RunConfig, run_dir: Path, manifest: dict[str, Any], shards: str) -> None:
    """Create or reopen the run folder: the config as given, the values derived from it (resolved.json, when
    setup derived any), the tokenizer copy; drop what marks it finished."""
    run = RunDir(run_dir)
    run.root.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(run)
    # An unfinished run must not look like a complete artifact: manifest.json and summary.json come last.
    for path in (run.manifest, run.summary):
        path.unlink(missing_ok=True)
    # JSON is valid YAML, and this keeps to the one atomic-write helper; `megalang train config.yaml` re-runs it.
    write_json_atomic(run.config, cfg.model_dump(mode="json"))
    if cfg.data.sft or cfg.data.classify:  # where data.sft / data.classify was tokenized: beside the config, never written into it
        write_json_atomic(run.resolved, {"data.shards": str(Path(shards).resolve())})
    copy_tokenizer(manifest, run.tokenizer)


def copy_tokenizer(manifest: dict[str, Any], dest: Path) -> None:
    """Copy the shards' tokenizer folder into the run, so export and generate need nothing outside it."""
    source = Path(manifest.get("tokenizer_path") or "")
    if not manifest.get("tokenizer_path") or not source.is_dir():
        raise UserError(
            f"data.shards: the tokenizer folder '{source}' named in its manifest is missing; restore it, pass a "
            "copy of it as data.tokenizer=FOLDER, or re-run `megalang data tokenize`"
        )
    if (dest / MANIFEST).is_file() and (source / MANIFEST).is_file() and \
            sha256_file(dest / MANIFEST) == sha256_file(source / MANIFEST):
        return
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)


