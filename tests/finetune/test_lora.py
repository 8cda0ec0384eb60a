"""LoRA (model/lora.py) and full fine-tuning through the trainer: trainable counts, adapter-only checkpoints,
`export --merge` loading in plain transformers, adapter export, and the errors for bad settings."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PLANTED

from megalang.config import RunConfig, load_config
from megalang.errors import UserError
from megalang.train.trainer import train


def sft_config(tmp_path, pretrained, chats, *extra: str) -> RunConfig:
    return load_config(RunConfig, None, [
        f"model.pretrained={pretrained}", f"data.sft={chats}", f"run.dir={tmp_path / 'run'}", "train.seq_len=64",
        "train.micro_batch_size=2", "train.max_steps=6", "optimizer.lr=3e-3", "schedule.min_lr=3e-4", "schedule.warmup_steps=1",
        "train.log_every=1", "checkpoint.every=0", "metrics.report=false", "train.progress=false", *extra,
    ])


@pytest.fixture(scope="module")
def lora_run(tiny_pretrained, tmp_path_factory):
    from conftest import QUESTIONS, write_jsonl

    tmp = tmp_path_factory.mktemp("lora")
    chats = write_jsonl(tmp / "chat.jsonl", [{"prompt": q, "completion": PLANTED} for q in QUESTIONS])
    cfg = sft_config(tmp, tiny_pretrained, chats, "lora.rank=4", "lora.targets=[q_proj,v_proj]")
    return tmp / "run", train(cfg)


def test_lora_trains_only_adapters(lora_run):
    run, summary = lora_run
    # 2 layers × (q_proj 64→64, v_proj 64→32) × rank 4: A (4×in) + B (out×4)
    assert summary["trainable_params"] == 2 * (4 * 64 + 64 * 4 + 4 * 64 + 32 * 4)
    assert summary["trainable_params"] < summary["total_params"]
    assert summary["trainable_fraction"] == pytest.approx(summary["trainable_params"] / summary["total_params"])
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["sft"]["examples"] == 6 and summary["sft"]["truncated"] == 0
    assert json.loads((run / "summary.json").read_text())["trainable_params"] == summary["trainable_params"]


def test_checkpoint_holds_adapters_not_the_frozen_base(lora_run):
    import torch.distributed.checkpoint as dcp

    run, _ = lora_run
    [ckpt] = list((run / "checkpoints").glob("step-*"))
    keys = [k for k in dcp.FileSystemReader(ckpt).read_metadata().state_dict_metadata if k.startswith("model.")]
    assert any("lora_A" in k for k in keys) and not any(k.endswith("q_proj.base_layer.weight") for k in keys)


def test_merged_export_loads_in_plain_transformers(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megalang.export import export
    from megalang.model.lora import load_lora_checkpoint
    from megalang.store.checkpoints import find_checkpoint, read_run_config

    run, _ = lora_run
    export(run, tmp_path / "merged", merge=True)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ckpt = find_checkpoint(run)
    peft_model = load_lora_checkpoint(ckpt, RunConfig.model_validate(read_run_config(ckpt)["config"]), merge=False)
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft_model(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tok.chat_template  # the model's chat template travels with the export


def test_onnx_export_of_a_lora_run_is_merged(lora_run, tiny_pretrained, tmp_path):
    """`export --format onnx` merges the adapters (export/source.py): ONNX Runtime's logits equal the peft model's."""
    pytest.importorskip("onnxruntime", reason="pip install 'megalang[onnx]'")
    from megalang.export import export
    from megalang.model.lora import load_lora_checkpoint
    from megalang.model.onnxrt import OnnxModel
    from megalang.store.checkpoints import find_checkpoint, read_run_config

    run, _ = lora_run
    manifest = export(run, tmp_path / "onnx", fmt="onnx")
    assert manifest["format"] == "onnx"
    ckpt = find_checkpoint(run)
    peft_model = load_lora_checkpoint(ckpt, RunConfig.model_validate(read_run_config(ckpt)["config"]), merge=False)
    ids = [[1, 5, 9, 200, 7]]
    with torch.no_grad():
        expected = peft_model(input_ids=torch.tensor(ids)).logits.numpy()
    got = OnnxModel(tmp_path / "onnx").logits(ids)
    assert abs(got - expected).max() < 1e-4
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_pretrained, dtype=torch.float32).eval()
    with torch.no_grad():
        assert abs(got - base(input_ids=torch.tensor(ids)).logits.numpy()).max() > 1e-3  # the adapters are in it


def test_a_lora_run_loads_for_generation_with_the_pretrained_tokenizer(lora_run):
    """`megalang generate --model RUN` on a run from model.pretrained: the run's tokenizer copy is the pretrained
    model's Hugging Face tokenizer (not a `tokenizer train` artifact), chat template included."""
    from megalang.model.load import load_model_for_inference

    loaded = load_model_for_inference(lora_run[0])
    assert loaded.tokenizer.chat_template and loaded.tokenizer("hello")["input_ids"]


def test_adapter_export_without_merge(lora_run, tmp_path, tiny_pretrained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from megalang.export import export

    run, _ = lora_run
    manifest = export(run, tmp_path / "adapter")
    assert manifest["format"] == "peft" and (tmp_path / "adapter" / "adapter_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_pretrained, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == manifest["counts"]["adapter_params"]


def test_full_finetune_of_a_pretrained_model(tiny_pretrained, planted_chats, tmp_path):
    summary = train(sft_config(tmp_path, tiny_pretrained, planted_chats))
    assert summary["trainable_params"] == summary["total_params"]
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert (tmp_path / "run" / "tokenizer" / "chat_template.jinja").is_file()  # the model's tokenizer, for export


def test_unknown_lora_target_is_named(tiny_pretrained, planted_chats, tmp_path):
    with pytest.raises(UserError, match=r"lora.targets: qkv_proj not found .*q_proj"):
        train(sft_config(tmp_path, tiny_pretrained, planted_chats, "lora.rank=4", "lora.targets=[qkv_proj]"))


def test_qlora_needs_cuda(tiny_pretrained, planted_chats, tmp_path):
    with pytest.raises(UserError, match="lora.qlora=true needs a CUDA GPU"):
        train(sft_config(tmp_path, tiny_pretrained, planted_chats, "lora.rank=4", "lora.qlora=true",
                         "train.device=cpu"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_sft_lora_recipe_on_smollm2_gguf(smol_gguf, planted_chats, tmp_path):
    """The issue's done-when: the sft-lora recipe on the real SmolLM2 GGUF on CPU: < 1% trainable, loss falls,
    and the merged export answers in the planted style in plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from typer.testing import CliRunner

    from megalang.cli import app

    run, out = tmp_path / "R", tmp_path / "merged"
    # Short rows and one example per step keep 30 steps of a 135M model quick on 2 CPU cores.
    result = CliRunner().invoke(app, ["train", "recipes/sft-lora.yaml", f"model.pretrained={smol_gguf}",
                                      f"data.sft={planted_chats}", "train.max_steps=30", f"run.dir={run}",
                                      "train.seq_len=64", "train.micro_batch_size=1", "train.progress=false"])
    assert result.exit_code == 0, result.output
    assert "trainable params:" in result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trainable_params"] / summary["total_params"] < 0.01
    assert summary["train_loss_last"] < summary["train_loss_first"] / 4
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--out", str(out), "--merge"])
    assert result.exit_code == 0, result.output
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = tok.apply_chat_template([{"role": "user", "content": "What colour is the sky?"}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")
    answer = tok.decode(model.generate(**ids, max_new_tokens=6, do_sample=False)[0, ids["input_ids"].shape[1]:])
    assert answer.startswith("BANANA"), answer


def test_qlora_loads_an_nf4_base_on_its_gpu():
    """The CUDA path's from_pretrained arguments (built without a GPU): NF4, double quantization, bf16 matmuls,
    the whole base on the run's device; nothing without lora.qlora."""
    from megalang.config import LoraConfig
    from megalang.model.lora import quantization_config

    kwargs = quantization_config(LoraConfig(rank=4, qlora=True), torch.device("cuda", 1))
    bnb = kwargs["quantization_config"]
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert bnb.bnb_4bit_quant_type == "nf4" and bnb.bnb_4bit_use_double_quant
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": 1}
    assert quantization_config(LoraConfig(rank=4)) == {}


def test_qlora_prepares_the_base_for_kbit_training(tiny_pretrained):
    """apply_lora with qlora runs peft's prepare_model_for_kbit_training first: the base is frozen, the adapters
    train, and the weights that stay unquantized (norms, embeddings) are cast to fp32; plain LoRA leaves them."""
    from transformers import AutoModelForCausalLM

    from megalang.config import LoraConfig
    from megalang.model.lora import apply_lora

    def build(qlora: bool):
        base = AutoModelForCausalLM.from_pretrained(tiny_pretrained, dtype=torch.bfloat16)
        return apply_lora(base, LoraConfig(rank=4, qlora=qlora))

    model = build(qlora=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert model.get_input_embeddings().weight.dtype == torch.float32
    norms = [p for n, p in model.named_parameters() if n.endswith("layernorm.weight")]
    assert norms and all(p.dtype == torch.float32 for p in norms)
    assert build(qlora=False).get_input_embeddings().weight.dtype == torch.bfloat16
