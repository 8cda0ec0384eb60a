"""train/checkpoint.py: DCP round trip, COMPLETE.json discovery, retention, crash safety, loading for inference."""

import json

import pytest
import torch

from megalang.config import ModelConfig, RunConfig, TrainSection
from megalang.errors import UserError
from megalang.model.build import build_model
from megalang.train import checkpoint as ckpt
from megalang.train.checkpoint import (
    apply_retention,
    complete_checkpoints,
    latest_complete,
    load_checkpoint,
    load_trained_model,
    save_checkpoint,
)
from megalang.train.optim import build_optimizer, build_scheduler

TRAIN = TrainSection(max_steps=20, warmup_steps=2, lr=1e-2)


class StubLoader:
    def __init__(self, consumed=0):
        self.consumed = consumed

    def state_dict(self):
        return {"consumed": self.consumed}

    def load_state_dict(self, state):
        self.consumed = state["consumed"]


def trained(seed=0, steps=2):
    model = build_model(ModelConfig(preset="debug"), 50, 16, {}, seed)
    opt = build_optimizer(model, TRAIN)
    sched = build_scheduler(opt, TRAIN)
    x = torch.randint(0, 50, (2, 17), generator=torch.Generator().manual_seed(seed))
    for _ in range(steps):
        logits = model(input_ids=x[:, :-1]).logits
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def save(run, step, model, opt, sched, keep=2, consumed=0):
    config = {"config": RunConfig(train=TRAIN).model_dump(mode="json"), "derived": {}}
    return save_checkpoint(run, step, model=model, optimizer=opt, scheduler=sched, loader=StubLoader(consumed),
                           tokens_seen=step * 10, run_config=config, keep=keep)


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
    assert isinstance(cfg, RunConfig) and cfg.train.lr == TRAIN.lr
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
