"""train/checkpoint.py: DCP round trip, COMPLETE.json discovery, retention, crash safety, loading for inference."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from megalang.config import ModelConfig, RunConfig
from megalang.errors import UserError
from megalang.model.build import build_model
from megalang.model.load import load_trained_model
from megalang.store.checkpoints import apply_retention, complete_checkpoints, latest_complete
from megalang.store.files import sha256_file
from megalang.train import checkpoint as ckpt
from megalang.train.checkpoint import load_checkpoint, save_checkpoint
from megalang.train.optim import build_optimizer, build_scheduler

RUN = RunConfig.model_validate({"train": {"max_steps": 20}, "schedule": {"warmup_steps": 2}, "optimizer": {"lr": 1e-2}})


class StubLoader:
    def __init__(self, consumed=0):
        self.consumed = consumed

    def state_dict(self):
        return {"consumed": self.consumed}

    def load_state_dict(self, state):
        self.consumed = state["consumed"]


def trained(seed=0, steps=2):
    model = build_model(ModelConfig(preset="debug"), 50, 16, {}, seed)
    opt = build_optimizer(model, RUN.optimizer)
    sched = build_scheduler(opt, RUN)
    x = torch.randint(0, 50, (2, 17), generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        logits = model(input_ids=x[:, :-1]).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def save(run, step, model, opt, sched, keep=2, consumed=0, checkpointer=None):
    """One save; a test of async saves passes its own Checkpointer (and closes it)."""
    config = {"config": RUN.model_dump(mode="json"), "derived": {}}
    state = dict(model=model, optimizer=opt, scheduler=sched, loader=StubLoader(consumed), tokens_seen=step * 10,
                 run_config=config)
    if checkpointer is None:
        return save_checkpoint(run, step, keep=keep, **state)
    return checkpointer.save(step, **state)


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = trained()
    torch.manual_seed(123)
    path = save(tmp_path, 2, model, opt, sched, consumed=8)
    expected_rand = torch.rand(3)
    assert path.name == "step-2" and not (tmp_path / "checkpoints" / "step-2.tmp").exists()
    complete = json.loads((path / "COMPLETE.json").read_text())
    assert complete["step"] == 2 and complete["tokens_seen"] == 20
    assert complete["files"]["trainer_state.json"] == (path / "trainer_state.json").stat().st_size

    model2, opt2, sched2 = trained(seed=1, steps=0)
    loader = StubLoader()
    state = load_checkpoint(path, model2, opt2, sched2, loader)
    assert state["step"] == 2 and state["tokens_seen"] == 20 and loader.consumed == 8
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p1][key], opt2.state[p2][key])
    assert sched2.last_epoch == 2 and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert torch.equal(torch.rand(3), expected_rand)  # the RNG continues where the save left it


def test_only_complete_folders_are_discovered(tmp_path):
    model, opt, sched = trained(steps=1)
    save(tmp_path, 3, model, opt, sched)
    root = tmp_path / "checkpoints"
    (root / "step-9.tmp").mkdir()  # a save killed before its rename
    (root / "step-7").mkdir()  # a folder without COMPLETE.json
    (root / "notes").mkdir()
    assert latest_complete(tmp_path) == root / "step-3"
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [3]
    assert latest_complete(tmp_path / "nothing") is None


def test_retention_keeps_the_newest_and_cleans_older_leftovers(tmp_path):
    model, opt, sched = trained(steps=1)
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)  # half-deleted leftover, older than all
    for step in (2, 4, 6, 8):
        save(tmp_path, step, model, opt, sched, keep=3)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-4", "step-6", "step-8"]
    apply_retention(tmp_path, keep=1)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [8]


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = trained(steps=1)
    save(tmp_path, 1, model, opt, sched, keep=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.dcp, "save", broken)
    with pytest.raises(OSError):
        save(tmp_path, 2, model, opt, sched, keep=1)
    assert latest_complete(tmp_path).name == "step-1"
    assert (tmp_path / "checkpoints" / "step-1" / "COMPLETE.json").is_file()


def test_load_trained_model(tmp_path):
    model, opt, sched = trained()
    save(tmp_path, 2, model, opt, sched)
    save(tmp_path, 5, *trained(seed=3, steps=1))
    loaded, cfg = load_trained_model(tmp_path, step=2)
    assert isinstance(cfg, RunConfig) and cfg.optimizer.lr == RUN.optimizer.lr
    assert not loaded.training and loaded.model.embed_tokens.weight.dtype == torch.float32
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(model.eval()(x).logits, loaded(x).logits)
    newest, _ = load_trained_model(tmp_path)
    assert not torch.equal(newest.lm_head.weight, loaded.lm_head.weight)


def test_load_trained_model_errors(tmp_path):
    with pytest.raises(UserError, match="no complete checkpoint"):
        load_trained_model(tmp_path)
    save(tmp_path, 2, *trained(steps=1))
    (tmp_path / "checkpoints" / "step-4").mkdir()
    with pytest.raises(UserError, match="step 4; complete steps: 2"):
        load_trained_model(tmp_path, step=4)


def test_complete_json_records_every_file_with_sha256(tmp_path):
    path = save(tmp_path, 2, *trained(steps=1))
    complete = json.loads((path / "COMPLETE.json").read_text())
    on_disk = sorted(p.name for p in path.iterdir() if p.name != "COMPLETE.json")
    assert sorted(complete["sha256"]) == sorted(complete["files"]) == on_disk
    assert {".metadata", "__0_0.distcp", "trainer_state.json", "run_config.json"} <= set(on_disk)
    for name, digest in complete["sha256"].items():
        assert digest == sha256_file(path / name), name


def corrupt_copy(tmp_path, edit):
    """A saved checkpoint copied to a fresh folder (verification is cached per folder), then edited."""
    save(tmp_path / "src", 2, *trained(steps=1))
    path = tmp_path / "run" / "checkpoints" / "step-2"
    shutil.copytree(tmp_path / "src" / "checkpoints" / "step-2", path)
    edit(path)
    return path


def test_missing_or_truncated_file_is_a_corrupt_checkpoint(tmp_path):
    missing = corrupt_copy(tmp_path / "a", lambda p: (p / ".metadata").unlink())
    with pytest.raises(UserError, match=r"step-2/.metadata: missing: checkpoint .* is corrupt"):
        load_checkpoint(missing, *trained(seed=1, steps=0), StubLoader())
    short = corrupt_copy(tmp_path / "b", lambda p: os.truncate(p / "__0_0.distcp", 10))
    with pytest.raises(UserError, match=r"__0_0.distcp: 10 bytes, COMPLETE.json records \d+"):
        load_trained_model(short.parent.parent)


def test_checkpoint_without_hashes_still_loads_with_sizes_checked(tmp_path):
    """Checkpoints written before COMPLETE.json held SHA-256 values: sizes are all there is to check."""
    def drop_hashes(path):
        record = json.loads((path / "COMPLETE.json").read_text())
        del record["sha256"]
        (path / "COMPLETE.json").write_text(json.dumps(record))

    old = corrupt_copy(tmp_path / "a", drop_hashes)
    assert load_checkpoint(old, *trained(seed=1, steps=0), StubLoader())["step"] == 2
    flipped = corrupt_copy(tmp_path / "b", drop_hashes)
    data = bytearray((flipped / "__0_0.distcp").read_bytes())
    data[-1] ^= 1
    (flipped / "__0_0.distcp").write_bytes(bytes(data))  # same size: undetectable without a hash
    assert load_checkpoint(flipped, *trained(seed=1, steps=0), StubLoader())["step"] == 2
    os.truncate(flipped / "__0_0.distcp", 10)
    with pytest.raises(UserError, match="10 bytes, COMPLETE.json records"):
        load_checkpoint(flipped, *trained(seed=1, steps=0), StubLoader())


def test_saving_an_older_step_retires_newer_checkpoints(tmp_path):
    """After a resume from an older step (checkpoint.resume_step) the newer checkpoints are an abandoned future:
    the first save removes them, so the next automatic resume cannot pick one."""
    model, opt, sched = trained(steps=1)
    for step in (2, 4, 6):
        save(tmp_path, step, model, opt, sched, keep=3)
    save(tmp_path, 4, model, opt, sched, keep=3)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-4"]


def test_dcp_files_are_written_with_fsync(tmp_path, monkeypatch):
    """Crash consistency rests on DCP syncing every file it writes before COMPLETE.json vouches for them."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = save(tmp_path, 2, *trained(steps=1))
    names = {os.path.basename(p) for p in synced}
    assert {"__0_0.distcp", ".metadata.tmp", "COMPLETE.json.tmp", "trainer_state.json.tmp", "step-2.tmp",
            "checkpoints"} <= names, names
    assert path.is_dir()


def test_each_file_is_hashed_once_per_save(tmp_path, monkeypatch):
    """The tensor files are hashed by the rank that wrote them, inside DCP's write (the background thread
    with async_save), and not read back a second time when COMPLETE.json is written."""
    from megalang.store import files

    hashed = []
    real = files.sha256_file

    def counting(path):
        hashed.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(files, "sha256_file", counting)
    path = save(tmp_path, 2, *trained(steps=1))
    assert sorted(hashed) == sorted(p.name for p in path.iterdir() if p.name != "COMPLETE.json")


def test_run_manifest_takes_checkpoint_hashes_from_complete_json(tmp_path, monkeypatch):
    """The run's final manifest does not read checkpoints back (they were hashed when saved), records the
    hashes COMPLETE.json vouches for, and so `verify` still catches a byte flipped after the save."""
    from megalang.cli.artifacts import verify
    from megalang.store import files
    from megalang.store.checkpoints import recorded_files
    from megalang.store.manifest import write_manifest

    model, opt, sched = trained(steps=1)
    path = save(tmp_path, 2, model, opt, sched)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    hashed = []
    real = files.sha256_file
    monkeypatch.setattr(files, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    manifest = write_manifest(tmp_path, "train", {}, [], {}, known_files=recorded_files(tmp_path))
    assert sorted(hashed) == [path / "COMPLETE.json", tmp_path / "metrics.jsonl"]  # COMPLETE.json is not in itself
    monkeypatch.undo()
    ckpt_files = {rel: info for rel, info in manifest["files"].items() if rel.startswith("checkpoints/")}
    assert ckpt_files and all(info["sha256"] == sha256_file(tmp_path / rel) for rel, info in ckpt_files.items())
    victim = next(p for p in path.iterdir() if p.suffix == ".distcp")
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    write_manifest(tmp_path, "train", {}, [], {}, known_files=recorded_files(tmp_path))
    assert any(victim.name in problem for problem in verify(tmp_path))


# --- async saves: the writer process and the writer thread --------------------------------------------


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_async_save_writes_the_same_checkpoint(tmp_path, writer):
    """Either writer leaves a complete checkpoint that round-trips, with every file hashed and nothing else in
    the folder (the writer process's digests file is read back and removed); the process is stopped at the end."""
    from megalang.parallel.distributed import maybe_init_process_group
    from megalang.torch_compat import dcp_writer_process

    model, opt, sched = trained(steps=1)
    group = maybe_init_process_group("cpu", alone=writer == "process")
    try:
        checkpointer = ckpt.Checkpointer(tmp_path, async_save=True, async_writer=writer)
        pending = save(tmp_path, 2, model, opt, sched, checkpointer=checkpointer)
        assert isinstance(pending, ckpt.PendingSave) and checkpointer.pending is pending
        checkpointer.wait_staged()
        path = checkpointer.finish_pending()
        assert checkpointer.pending is None
        writer_process = dcp_writer_process()
        assert (writer_process is not None) == (writer == "process")
        checkpointer.close()
        assert dcp_writer_process() is None
        assert writer_process is None or not writer_process._save_process.is_alive()  # torch_compat's reach
    finally:
        group.close()
    record = json.loads((path / "COMPLETE.json").read_text())
    assert set(record["sha256"]) == {p.name for p in path.iterdir() if p.name != "COMPLETE.json"}
    assert all(record["sha256"][name] == sha256_file(path / name) for name in record["sha256"])
    fresh, fresh_opt, fresh_sched = trained(seed=1, steps=1)
    load_checkpoint(path, fresh, fresh_opt, fresh_sched, StubLoader())
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_a_one_shot_save_leaves_another_checkpointers_writer_process_running(tmp_path):
    """DCP keeps one writer process per Python process: only the Checkpointer that started it stops it."""
    from megalang.parallel.distributed import maybe_init_process_group
    from megalang.torch_compat import dcp_writer_process

    model, opt, sched = trained(steps=1)
    group = maybe_init_process_group("cpu", alone=True)
    try:
        with ckpt.Checkpointer(tmp_path / "a", async_save=True, async_writer="process") as checkpointer:
            save(tmp_path / "a", 2, model, opt, sched, checkpointer=checkpointer).finish()
            save(tmp_path / "b", 2, model, opt, sched)  # a sync save through its own short-lived Checkpointer
            assert dcp_writer_process() is not None
        assert dcp_writer_process() is None
    finally:
        group.close()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="nice values are a POSIX feature")
def test_background_writer_runs_at_the_lowest_priority_and_the_caller_keeps_its_own(tmp_path, monkeypatch):
    import threading

    seen = []
    real = ckpt._SyncedWriter.write_data

    def write_data(self, plan, planner):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real(self, plan, planner)

    monkeypatch.setattr(ckpt._SyncedWriter, "write_data", write_data)
    model, opt, sched = trained(steps=1)
    with ckpt.Checkpointer(tmp_path, async_save=True, async_writer="thread") as checkpointer:
        save(tmp_path, 2, model, opt, sched, checkpointer=checkpointer).finish()
    save(tmp_path, 4, model, opt, sched)  # a sync save writes in the calling thread, which keeps its priority
    assert seen == [19, 0]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0  # the training thread is untouched


def test_shared_memory_too_small_for_the_writer_process_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"stages 1024.00 GiB .* in .*; enlarge it \(docker run --shm-size=...\) "
                                        r"or set checkpoint.async_writer=thread"):
        ckpt.check_shared_memory(2**40, tmp_path)
    ckpt.check_shared_memory(1024, tmp_path)
    ckpt.check_shared_memory(2**40, tmp_path / "missing")  # no tmpfs to measure: nothing to say


def test_auto_async_writer_is_a_process_beside_a_gpu_and_a_thread_on_a_cpu():
    from megalang.train.setup import async_writer, writer_process

    def cfg(*extra):
        return RunConfig.model_validate({"checkpoint": dict(kv.split("=") for kv in extra)})

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert async_writer(cfg(), cpu) == "thread" and async_writer(cfg(), cuda) == "process"
    assert async_writer(cfg("async_writer=process"), cpu) == "process"
    assert async_writer(cfg("async_writer=thread"), cuda) == "thread"
    assert not writer_process(cfg(), cuda)  # no async_save: no writer at all
    assert writer_process(cfg("async_save=true"), cuda) and not writer_process(cfg("async_save=true"), cpu)


def test_background_save_group_gets_the_run_collective_timeout(monkeypatch):
    """A new group does not inherit the default group's timeout (gloo's own is 30 min): a rank that dies during
    an async save must fail the others within parallel.timeout_s, as in training."""
    import datetime

    from megalang.parallel.distributed import maybe_init_process_group

    group = maybe_init_process_group("cpu", alone=True)
    try:
        made = []
        real = torch.distributed.new_group
        monkeypatch.setattr(torch.distributed, "new_group", lambda **kw: made.append(kw) or real(**kw))
        checkpointer = ckpt.Checkpointer(".", async_save=True, timeout_s=42.0)
        assert checkpointer._async_group() is checkpointer._async_group()  # made once per default group
        assert made == [{"backend": "gloo", "timeout": datetime.timedelta(seconds=42)}]
    finally:
        group.close()
