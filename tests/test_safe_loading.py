"""Safe loading (docs/reliability.md): a malicious pickle anywhere megalang might read weights from is refused
with exit code 2, and the code inside it never runs (its marker file is never created)."""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
import torch
from tiny_pipeline import cli, copy_tree, pipeline_for, train_args

from megalang.errors import UserError
from megalang.safe_load import load_dcp
from megalang.store.files import sha256_file

SRC = Path(__file__).resolve().parents[1] / "src" / "megalang"


class Payload:
    """Unpickling this runs code: it creates `marker`. Anything that unpickles it unsafely proves a hole."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return pipeline_for(tmp_path_factory)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "the malicious pickle ran"


def pickle_only_folder(src: Path, dst: Path, marker: Path) -> Path:
    """A Hugging Face folder (config + tokenizer) whose weights are a malicious `pytorch_model.bin`."""
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "manifest.json":
            (dst / f.name).write_bytes(f.read_bytes())
    (dst / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    return dst


def forge_complete(ckpt: Path) -> None:
    """An attacker controls the whole folder, so COMPLETE.json's sizes (and SHA-256s, where recorded) match the
    planted file: integrity checks catch accidents, only safe loading stops a crafted checkpoint."""
    record = json.loads((ckpt / "COMPLETE.json").read_text())
    record["files"] = {name: (ckpt / name).stat().st_size for name in record["files"]}
    if "sha256" in record:
        record["sha256"] = {name: sha256_file(ckpt / name) for name in record["sha256"]}
    (ckpt / "COMPLETE.json").write_text(json.dumps(record))


def assert_refused(args, *words):
    code, lines, crash = cli(*args)
    assert crash is None and code == 2, (lines, crash)
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines


def _calls(tree: ast.AST, module: str, names: tuple[str, ...]):
    for node in ast.walk(tree):
        func = getattr(node, "func", None)
        if isinstance(func, ast.Attribute) and func.attr in names and getattr(func.value, "id", None) == module:
            yield node


def test_every_torch_load_in_src_is_weights_only():
    """The audit as a test: every torch.load(...) in src/ passes weights_only=True (a literal, so no fallback
    can switch it off) and nothing calls pickle.load / pickle.loads."""
    seen = 0
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "torch", ("load",)):
            flags = [k.value for k in call.keywords if k.arg == "weights_only"]
            assert flags and isinstance(flags[0], ast.Constant) and flags[0].value is True, (path, call.lineno)
            seen += 1
        assert not list(_calls(tree, "pickle", ("load", "loads"))), path
    assert seen >= 1  # safe_load.py's own torch.load is found: the walk works


def test_eval_model_folder_with_only_pytorch_model_bin_is_refused(pipe, tmp_path, marker):
    folder = pickle_only_folder(pipe.export, tmp_path / "hf", marker)
    assert_refused(["eval", "perplexity", "--model", folder, "--data", pipe.shards, "--max-batches", 1],
                   f"--model={folder}", "only pickle weights (pytorch_model.bin)", "safetensors")


def test_generate_model_folder_with_only_pytorch_model_bin_is_refused(pipe, tmp_path, marker):
    folder = pickle_only_folder(pipe.export, tmp_path / "hf", marker)
    assert_refused(["generate", "--model", folder, "--prompt", "def "], "only pickle weights", "safetensors")


def test_model_pretrained_with_only_pytorch_model_bin_is_refused(pipe, tmp_path, marker):
    folder = pickle_only_folder(pipe.export, tmp_path / "hf", marker)
    run = tmp_path / "run"
    assert_refused(train_args(pipe.shards, run, f"model.pretrained={folder}"),
                   f"model.pretrained={folder}", "only pickle weights", "safetensors")
    assert not (run / "manifest.json").exists() and not list(run.rglob("COMPLETE.json"))


def test_distill_teacher_with_only_pytorch_model_bin_is_refused(pipe, tmp_path, marker):
    folder = pickle_only_folder(pipe.export, tmp_path / "hf", marker)
    run = tmp_path / "run"
    assert_refused(train_args(pipe.shards, run, "loss.objective=distill", f"distill.teacher={folder}"),
                   f"distill.teacher={folder}", "only pickle weights", "safetensors")
    assert not (run / "manifest.json").exists() and not list(run.rglob("COMPLETE.json"))


def test_safetensors_win_when_both_are_present(pipe, tmp_path, marker):
    """A folder with model.safetensors and a stray malicious .bin loads, from the safetensors, never the .bin."""
    folder = copy_tree(pipe.export, tmp_path / "hf")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    code, lines, crash = cli("eval", "perplexity", "--model", folder, "--data", pipe.shards, "--max-batches", 1)
    assert code == 0 and crash is None, lines


@pytest.mark.parametrize("command", ["export", "eval", "resume"])
def test_malicious_checkpoint_metadata_is_refused(pipe, tmp_path, marker, command):
    """DCP writes `.metadata` with pickle and upstream reads it with pickle.load; megalang's reader refuses
    any global that is not DCP's own plain data."""
    run = copy_tree(pipe.run, tmp_path / "run")
    newest = run / "checkpoints" / "step-2"
    (newest / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    forge_complete(newest)
    args = {
        "export": ["export", "--run", run, "--out", tmp_path / "out"],
        "eval": ["eval", "perplexity", "--model", run, "--data", pipe.shards, "--max-batches", 1],
        "resume": train_args(pipe.shards, run, "train.max_steps=3"),
    }[command]
    assert_refused(args, str(newest / ".metadata"), "builtins.exec", "not allowed")
    assert not (tmp_path / "out").exists()


def test_malicious_checkpoint_data_file_is_refused(pipe, tmp_path, marker):
    run = copy_tree(pipe.run, tmp_path / "run")
    (run / "checkpoints" / "step-2" / "__0_0.distcp").write_bytes(pickle.dumps(Payload(marker)) * 64)
    forge_complete(run / "checkpoints" / "step-2")
    assert_refused(["export", "--run", run, "--out", tmp_path / "out"], str(run / "checkpoints" / "step-2"),
                   "cannot load this checkpoint")
    assert not (tmp_path / "out").exists()


def test_malicious_non_tensor_value_in_a_checkpoint_is_refused(tmp_path, marker):
    """Upstream DCP (torch 2.13) reads non-tensor values (optimizer hyperparameters) with
    torch.load(weights_only=False), which would run the payload; megalang's `load_dcp` refuses it."""
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(3), "lr": Payload(marker)}, checkpoint_id=tmp_path / "ckpt")
    with pytest.raises(UserError, match=r"refused a value in the checkpoint \(lr\)"):
        load_dcp({"w": torch.zeros(3), "lr": 0.0}, tmp_path / "ckpt")


def test_the_payload_really_runs_when_unpickled(tmp_path):
    """The control: the payload the tests above plant does create its marker when unpickled naively."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").read_text() == "pwned"


def test_load_dcp_round_trips_plain_values(tmp_path):
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.arange(4.0), "betas": (0.9, 0.95), "name": "adamw"}, checkpoint_id=tmp_path / "ckpt")
    state = {"w": torch.zeros(4), "betas": None, "name": None}
    load_dcp(state, tmp_path / "ckpt")
    assert torch.equal(state["w"], torch.arange(4.0)) and state["betas"] == (0.9, 0.95) and state["name"] == "adamw"


def test_export_writes_safetensors_only(pipe):
    files = sorted(p.name for p in pipe.export.iterdir())
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))], files
