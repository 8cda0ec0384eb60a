"""Checkpoint save and load through torch.distributed.checkpoint (DCP): tensors sharded by DCP, JSON for the rest.

The folder protocol (step-N.tmp/ → COMPLETE.json → rename), discovery, integrity and retention are
store/checkpoints.py's; this module moves state between the model and those folders.

With several processes every rank writes its own shards through DCP (which records the global layout), and
rank 0 alone writes the JSON files, the COMPLETE marker and renames. Loading plans against the current
model's layout, so a run saved with one sharding (FSDP, TP, PP, one process) resumes with any other.
The run folder must be on a filesystem every rank sees.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

from megalang.errors import UserError
from megalang.parallel.distributed import barrier
from megalang.parallel.timeouts import collective_timeout
from megalang.safe_load import load_dcp, quiet_dcp
from megalang.store.checkpoints import (
    apply_retention,
    corrupt_error,
    file_problems,
    find_checkpoint,
    hash_named,
    latest_complete,
    mark_complete,
    read_complete,
    start_checkpoint,
)
from megalang.store.files import read_json, write_json_atomic
from megalang.store.run_dir import COMPLETE, CheckpointFiles, RunDir
from megalang.torch_compat import stop_dcp_writer_process
from megalang.train.faults import FaultPlan

# --- RNG --------------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Torch CPU (and CUDA) generator states as base64, so dropout continues identically after a resume.

    Data order and initialisation use their own seeded generators, so numpy/python RNGs hold no state.
    """
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict[str, Any]) -> None:
    def decode(text: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)

    torch.set_rng_state(decode(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([decode(s) for s in state["cuda"]])


# --- save -------------------------------------------------------------------------------------------


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


class PendingSave:
    """An async checkpoint in flight: its tensors are being written by DCP's background writer (a thread or a
    process); `finish()` waits for them, then marks it complete. Until then the previous checkpoint stays the
    newest one."""

    def __init__(self, response, finalize, folder: Path):
        self.folder = folder  # the step-N.tmp/ being written, named if the write fails
        # DCP returns an AsyncSaveResponse when staging itself runs in the background, else a plain future.
        self.staged = getattr(response, "staging_completion", None)
        self.future = getattr(response, "upload_completion", response)
        self.finalize = finalize
        self.done: Path | None = None

    def wait_staged(self) -> None:
        """Block until the state is copied to host memory; after that the live tensors may change. The
        trainer calls this right before the optimizer step, so staging overlaps the forward/backward."""
        if self.staged is not None:
            self.staged.result()
            self.staged = None

    def finish(self) -> Path:
        """Wait for the write, then mark the checkpoint complete (once; later calls return the same folder)."""
        if self.done is None:
            self.wait_staged()
            with environment_failures(self.folder):
                self.future.result()
            self.done = self.finalize()
        return self.done


@contextlib.contextmanager
def environment_failures(folder: Path):
    """A full disk or read-only folder while DCP writes reaches us wrapped in a CheckpointException; report it
    as the one-line UserError it is (the half-written `step-N.tmp/` is never discoverable). Anything else is a
    bug and keeps its traceback."""
    from torch.distributed.checkpoint.api import CheckpointException

    from megalang.errors import from_os_error

    try:
        yield
    except CheckpointException as e:
        for rank, (exc, _trace) in sorted(e.failures.items()):
            cause = exc if isinstance(exc, OSError) else exc.__cause__ or exc.__context__
            if isinstance(cause, OSError) and cause.filename is None:  # a failed write names no file
                cause = OSError(cause.errno, cause.strerror, str(folder))
            user = from_os_error(cause) if isinstance(cause, OSError) else None
            if user is not None:
                raise UserError(f"checkpoint save (rank {rank}): {user}") from None
        raise


def check_shared_memory(nbytes: int, shm: Path = Path("/dev/shm")) -> None:
    """A writer process (checkpoint.async_writer=process) maps the staged state from shared memory, which on
    Linux is the /dev/shm tmpfs; a container's default there (Docker: 64 MiB) would fail the first save,
    possibly hours into the run. The trainer calls this at setup with the state of all ranks on this node."""
    if not shm.is_dir():
        return  # no tmpfs to measure (macOS keeps POSIX shared memory elsewhere)
    free = shutil.disk_usage(shm).free
    if free < nbytes:
        raise UserError(
            f"checkpoint.async_writer=process stages {nbytes / 2**30:.2f} GiB of model and optimizer state (this "
            f"node's ranks together) in "
            f"{shm}, which has {free / 2**30:.2f} GiB free; enlarge it (docker run --shm-size=...) or set "
            "checkpoint.async_writer=thread")


# Whether a DCP stager survives its first save (see Checkpointer._stager).
STAGER_REUSABLE = torch.__version__ >= "2.13"


class Checkpointer:
    """Saves a run's checkpoints, and owns what async saves keep between saves: one host stager per writer kind
    (a process reads shared memory, a thread plain host memory), the gloo group background saves use, DCP's
    writer process and the save in flight; also which checkpoints this process already verified. `close()` at
    the end of a run, a failed one too (the trainer does, in `train`'s finally)."""

    def __init__(self, run_dir: RunDir | str | os.PathLike, keep: int = 2, async_save: bool = False,
                 async_writer: str = "thread", timeout_s: float | None = None, faults: FaultPlan = FaultPlan()):
        self.run, self.keep, self.faults = RunDir.of(run_dir), keep, faults
        self.async_save, self.async_writer, self.timeout_s = async_save, async_writer, timeout_s
        self.pending: PendingSave | None = None
        self.verified: set[tuple] = set()  # see verify_checkpoint
        self._stagers: dict[bool, Any] = {}
        self._group: Any = None
        self._group_of: Any = None  # the default group `_group` was made for

    def save(self, step: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             loader: Any, tokens_seen: int, run_config: dict[str, Any],
             extra: dict[str, Any] | None = None) -> Path | PendingSave:
        """Write `checkpoints/step-N/` (tmp folder → COMPLETE.json → rename), then apply retention.

        Every rank calls this (DCP's save is collective). A save still in flight is finished first: one at a
        time, and its host buffers are what this one reuses. With async_save it returns once the tensors are
        staged, as a PendingSave that `finish_pending()` (or the next save) completes; async_writer="process"
        writes from a process of DCP's (which needs a process group; see
        parallel.distributed.maybe_init_process_group(alone=True)), "thread" from a thread of this one."""
        self.finish_pending()
        run, faults = self.run, self.faults
        final, tmp = run.step(step), run.step_tmp(step)
        if _rank() == 0:
            start_checkpoint(run, step)
        barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(model))
        if _rank() == 0:
            _write_trainer_files(tmp, step, model, scheduler, loader, tokens_seen, run_config, extra)
        process = self.async_save and self.async_writer == "process"
        writer = _SyncedWriter(tmp, step, faults, background=self.async_save, process=process)

        def finalize() -> Path:
            digests = _gather_digests(writer.written_digests())  # every rank calls finalize
            if _rank() == 0:
                faults.at_save("after_shards", step)
                mark_complete(run, step, tokens_seen, digests, fault=faults.at_save)
                apply_retention(run, self.keep, fault=faults.at_save)
            return final

        with quiet_dcp():
            if self.async_save:
                kind = AsyncCheckpointerType.PROCESS if process else AsyncCheckpointerType.THREAD
                response = dcp.async_save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp,
                                          storage_writer=writer, process_group=self._async_group(),
                                          async_checkpointer_type=kind, async_stager=self._stager(process))
                self.pending = PendingSave(response, finalize, tmp)
                return self.pending
            with environment_failures(tmp):
                dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp, storage_writer=writer)
        # DCP's save ends with rank 0 writing the metadata after every rank reported its writes, so once it
        # returns everything is on disk; the barrier keeps ranks from racing ahead of the rename.
        final = finalize()
        barrier()
        return final

    def wait_staged(self) -> None:
        """Before weights change: the save in flight must have its host copy (a no-op without one)."""
        if self.pending is not None:
            self.pending.wait_staged()

    def finish_pending(self) -> Path | None:
        """Wait for the async save in flight (if any) and mark it complete."""
        pending, self.pending = self.pending, None
        return pending.finish() if pending is not None else None

    def close(self) -> None:
        """Drop the host copies kept between saves and stop DCP's writer process. A save still in flight is not
        completed (a failed run): its step-N.tmp/ is never discovered."""
        self.pending = None
        started_writer = True in self._stagers  # DCP's writer process is per Python process: stop it only if ours
        while self._stagers:
            self._stagers.popitem()[1].close()
        if started_writer:
            stop_dcp_writer_process()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _async_group(self):
        """A gloo group of its own for background saves: sharing the training group would interleave the save's
        collectives with the training step's and hang (torchtitan does the same). It gets the run's collective
        timeout (parallel.timeout_s): a new group does not inherit the default group's, and gloo's own is 30 min."""
        if not torch.distributed.is_initialized():
            return None
        default = torch.distributed.group.WORLD
        if self._group_of is not default:  # a group from an earlier (destroyed) default group is dead
            timeout = collective_timeout(self.timeout_s) if self.timeout_s else None
            self._group, self._group_of = torch.distributed.new_group(backend="gloo", timeout=timeout), default
        return self._group

    def _stager(self, process: bool):
        """The copy of the state to host memory that an async save writes from.

        On CUDA the copy runs in a background thread (pinned memory, non-blocking copies): the save call returns
        at once and only the optimizer step waits for it. On a CPU it runs before the save call returns: a
        background copy's intra-op threads would compete with the training step's for the same cores (measured:
        the step slowed by up to 1.2 s for a 0.04 s copy on 2 cores), so a plain copy before returning stalls
        less. For a writer process the copy is in shared memory, which the process maps instead of receiving one.

        One stager per writer kind, kept across saves: it caches a host buffer per tensor storage (weakly keyed,
        so a freed model's buffers go with it), and later saves copy into those buffers instead of allocating and
        faulting in the whole state again. Before torch 2.13 a stager serves one save only: DefaultStager closes
        its copier after every copy, which empties the copier's type table, and the next copy fails (KeyError:
        <class 'type'>, seen on 2.11); there each save gets a new one and no buffers are reused."""
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

        if process in self._stagers and not STAGER_REUSABLE:
            self._stagers.pop(process).close()
        if process not in self._stagers:
            cuda = torch.cuda.is_available()
            self._stagers[process] = DefaultStager(StagingOptions(
                use_pinned_memory=cuda, use_shared_memory=process, use_async_staging=cuda, use_non_blocking_copy=cuda))
        return self._stagers[process]


def save_checkpoint(run_dir: RunDir | str | os.PathLike, step: int, *, keep: int = 2, faults: FaultPlan = FaultPlan(),
                    **state: Any) -> Path:
    """One synchronous save without a Checkpointer to keep (tests, benchmarks, tools)."""
    with Checkpointer(run_dir, keep=keep, faults=faults) as checkpointer:
        return checkpointer.save(step, **state)


class _SyncedWriter(dcp.FileSystemWriter):
    """DCP's file writer with `sync_files=True` spelled out (its default today): every tensor file and the
    `.metadata` are fsynced before DCP reports them written, which COMPLETE.json then vouches for. DCP renames
    `.metadata` into place without syncing the folder; writing COMPLETE.json syncs it (write_json_atomic).

    Each rank also hashes the files it wrote, right after writing them: the hashing is spread over all ranks
    (rank 0 alone would read the whole checkpoint back on every save), and with async_save it runs in DCP's
    background writer instead of stalling the training loop when the save is finalized. A writer process works
    on its own copy of this object, so there the digests come back through a file beside the shards, which
    `written_digests` reads and removes before the checkpoint is described."""

    def __init__(self, path: Path, step: int, faults: FaultPlan, background: bool = False, process: bool = False):
        super().__init__(path, sync_files=True)
        self.step, self.faults, self.background, self.process = step, faults, background, process
        self.trainer_pid = os.getpid()  # a fault injected in a writer process kills the trainer too
        self.digests: dict[str, str] = {}

    def set_up_storage_writer(self, *args, **kwargs) -> None:
        if self.background:  # the first call DCP makes in its writer thread or process, before planning and writing
            _lowest_cpu_priority()
        if self.process:  # DCP sets its writer process's root logger to INFO; keep its per-save lines off stderr
            logging.getLogger().setLevel(logging.WARNING)
        super().set_up_storage_writer(*args, **kwargs)

    def write_data(self, plan, planner):
        future = super().write_data(plan, planner)  # the files are written (and synced) when this returns
        names = sorted({result.storage_data.relative_path for result in future.value()})
        self.digests = hash_named(Path(self.path), names)
        if self.process:
            write_json_atomic(self._digests_file(), self.digests)
        return future

    def finish(self, metadata, results) -> None:
        # DCP calls finish on the coordinator (rank 0) once every rank has reported its files written.
        self.faults.at_save("before_metadata", self.step, also_kill=self.trainer_pid)
        super().finish(metadata, results)

    def written_digests(self) -> dict[str, str]:
        """{file: SHA-256} of the files this rank wrote (after the save)."""
        if not self.process:
            return self.digests
        digests = read_json(self._digests_file(), "checkpoint digests")
        self._digests_file().unlink()
        return digests

    def _digests_file(self) -> Path:
        return Path(self.path) / f"digests-rank{_rank()}.json"


def _lowest_cpu_priority() -> None:
    """Run the calling thread (DCP's background writer, and the hashing threads it starts, which inherit it) at
    nice 19, so it yields contended cores to training: a concurrent forward/backward slowed by 0.51–0.69 s with
    a plain background write, 0.03–0.25 s at nice 19. Where training keeps every core busy the write's CPU
    time still comes out of training (docs/benchmarks.md); beside a GPU the cores are idle. Linux sets nice per
    thread; elsewhere this is a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _gather_digests(digests: dict[str, str]) -> dict[str, str]:
    """Every rank's {file: SHA-256} merged (the files of different ranks have different names)."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return {name: digest for part in _all_ranks(digests, world) for name, digest in part.items()}


def _write_trainer_files(tmp: Path, step: int, model, scheduler, loader, tokens_seen: int,
                         run_config: dict[str, Any], extra: dict[str, Any] | None) -> None:
    """The JSON half of a checkpoint (rank 0). The loader state is global (consumed samples over all data
    ranks) and the RNG state is rank 0's: every rank restores it, whatever the new world size."""
    trainer_state = {
        "step": step,
        "tokens_seen": tokens_seen,
        "scheduler": scheduler.state_dict(),
        "loader": loader.state_dict(),
        "rng": capture_rng(),
        **(extra or {}),
    }
    write_json_atomic(tmp / CheckpointFiles.TRAINER_STATE, trainer_state)
    write_json_atomic(tmp / CheckpointFiles.RUN_CONFIG, run_config)
    write_json_atomic(tmp / CheckpointFiles.MODEL_CONFIG, model.config.to_dict())


# --- load -------------------------------------------------------------------------------------------


def _options(model) -> StateDictOptions:
    """Optimizer state is keyed by parameter name (flattened), not by param-group index: pipeline stages each
    have a group 0 holding different parameters, and index keys made one stage's overwrite the other's.

    Frozen parameters (a LoRA run's base) are not saved: they come back from model.pretrained, and leaving
    them out keeps a 135M-parameter base from being rewritten with every checkpoint."""
    if all(p.requires_grad for p in model.parameters()):
        return StateDictOptions(flatten_optimizer_state_dict=True)
    return StateDictOptions(flatten_optimizer_state_dict=True, ignore_frozen_params=True, strict=False)


def _verified_key(path: Path) -> tuple:
    """The folder and every file's (name, size, mtime): a file rewritten or truncated since the last check
    is checked again; stat calls cost nothing next to hashing."""
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return (str(path.resolve()), tuple(files))


def _all_ranks(value: Any, world: int) -> list[Any]:
    """`value` from every rank (a list of one without a process group)."""
    if world == 1:
        return [value]
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def verify_checkpoint(path: Path, verified: set[tuple] | None = None) -> None:
    """Every file of a complete checkpoint against COMPLETE.json, before any of it is read (UserError naming
    the first bad file). With several ranks each hashes its share of the files and all agree on the outcome,
    so every rank stops, or none does. Once per process and checkpoint: a resume checks it while choosing it
    (before touching the run folder) and does not re-read terabytes when loading it a moment later: `verified`
    (a Checkpointer's) remembers what this process checked."""
    path = Path(path)
    key = _verified_key(path)
    rank, world = (_rank(), torch.distributed.get_world_size()) if torch.distributed.is_initialized() else (0, 1)
    verified = set() if verified is None else verified
    if all(_all_ranks(key in verified, world)):  # skipped only if every rank skips: no rank waits alone
        return
    record = read_complete(path)
    problems = file_problems(path, record, sorted(record["files"])[rank::world])
    problems = [line for part in _all_ranks(problems, world) for line in part]
    if problems:
        raise corrupt_error(path, problems)
    verified.add(key)


def load_checkpoint(path: str | os.PathLike, model, optimizer, scheduler, loader,
                    verified: set[tuple] | None = None) -> dict[str, Any]:
    """Load a complete checkpoint into the given objects (in place); return the trainer state
    (step, tokens_seen, and anything saved as `extra`, such as the fp16 loss scaler)."""
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise UserError(f"{path}: not a complete checkpoint (no {COMPLETE})")
    verify_checkpoint(path, verified)
    # get_state_dict gives tensors of the right shapes (sharded, later) for DCP to load into.
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_options(model))
    state = {"model": model_sd, "optim": optim_sd}
    with quiet_dcp():
        load_dcp(state, path)  # never unpickles arbitrary objects
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(model))
    trainer_state = read_json(path / CheckpointFiles.TRAINER_STATE, "trainer state")
    scheduler.load_state_dict(trainer_state["scheduler"])
    loader.load_state_dict(trainer_state["loader"])
    restore_rng(trainer_state["rng"])
    return trainer_state


def resume_checkpoint(run_dir: str | os.PathLike, step: int | None, verified: set[tuple] | None = None) -> Path | None:
    """Where a run continues, verified: exactly `step` when one is requested (checkpoint.resume_step; missing
    or incomplete is an error, never a silent fresh start), else the newest complete checkpoint (None: fresh)."""
    path = latest_complete(run_dir) if step is None else find_checkpoint(run_dir, step, field="checkpoint.resume_step")
    if path is not None:
        verify_checkpoint(path, verified)
    return path
