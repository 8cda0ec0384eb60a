"""Build the transformers model a run trains: a preset initialised from the seed, or a pretrained folder / GGUF.

Models are constructed on the `meta` device and materialised afterwards, so a 100B preset never exists in full.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from megalang.config import ModelConfig
from megalang.errors import UserError
from megalang.model.presets import get_preset

INIT_STD = 0.02


def special_ids(shard_manifest: dict[str, Any]) -> dict[str, int | None]:
    """bos/eos/pad/unk ids of the tokenizer that made the shards (None where it has no such token)."""
    return {k: shard_manifest.get(f"{k}_id") for k in ("bos", "eos", "pad", "unk")}


def build_llama_config(model_cfg: ModelConfig, vocab_size: int, seq_len: int, special_ids: dict[str, Any]):
    """The LlamaConfig of a preset, sized to the tokenizer and sequence length."""
    from transformers import LlamaConfig

    kwargs = get_preset(model_cfg.preset)
    kwargs["vocab_size"] = vocab_size
    theta = kwargs.pop("rope_theta")
    return LlamaConfig(
        **kwargs,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        max_position_embeddings=seq_len,
        attention_dropout=model_cfg.dropout,
        initializer_range=INIT_STD,
        attn_implementation="sdpa",
        bos_token_id=special_ids.get("bos"),
        eos_token_id=special_ids.get("eos"),
        pad_token_id=special_ids.get("pad"),
    )


def build_model(
    model_cfg: ModelConfig,
    vocab_size: int,
    seq_len: int,
    special_ids: dict[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
    quantization: dict[str, Any] | None = None,
):
    """A LlamaForCausalLM in fp32 and train mode; `device="meta"` returns it unmaterialised.

    A meta model is what a parallelize pass shards before `materialize(model, device, seed)` fills it.
    `quantization` (QLoRA: model/lora.py `quantization_config`) loads model.pretrained 4-bit, already on its GPU.
    """
    if model_cfg.pretrained:
        if str(device) == "meta":
            raise UserError("model.pretrained cannot be built on the meta device; its weights come from disk")
        model = load_pretrained(model_cfg, vocab_size, seq_len, **(quantization or {}))
        return model if quantization else model.to(device)  # a 4-bit model cannot be moved; device_map placed it
    from transformers import LlamaForCausalLM

    config = build_llama_config(model_cfg, vocab_size, seq_len, special_ids)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    if str(device) != "meta":
        materialize(model, device, seed)
    return model.train()


def materialize(model, device: str | torch.device, seed: int | None, reference=None) -> None:
    """Allocate a meta model on `device`, rebuild its computed buffers, and initialise it from `seed` (if given).

    `model` may be sharded (FSDP2/TP DTensors) or one pipeline stage; `reference` is then the whole meta
    model, whose module order fixes the random stream (see `init_weights`).
    """
    model.to_empty(device=device)
    reset_computed_buffers(model)
    # to_empty gives tied parameters separate storage; tie them again before initialising.
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    if seed is not None:
        init_weights(model, seed, reference=reference, device=device)


def reset_computed_buffers(model) -> None:
    """Recompute non-persistent buffers (RoPE inverse frequencies), which no state dict carries.

    After `to_empty` they hold garbage; a fresh rotary module on the CPU computes them exactly as a
    normally constructed model does.
    """
    for module in model.modules():
        if hasattr(module, "inv_freq") and hasattr(module, "config"):
            fresh = type(module)(module.config)
            for name, buf in fresh.named_buffers(recurse=False):
                getattr(module, name).copy_(buf)


@torch.no_grad()
def init_weights(model, seed: int, reference=None, device: str | torch.device | None = None) -> None:
    """Initialise every weight from one generator seeded by `seed`, in module order (deterministic).

    Normal(0, 0.02) for embeddings and linear layers, ones for norms; the projections that write into the
    residual stream (o_proj, down_proj) get std 0.02/sqrt(2·layers) so the residual variance does not grow
    with depth (GPT-2 / OLMo). Uses its own generator so the global RNG (dropout) stays untouched.

    The stream walks `reference` (default: `model`) and each full weight is drawn before this rank keeps its
    part of it (its DTensor shard, or nothing when another pipeline stage owns it). So every layout starts
    from exactly the weights one process would, while holding one full weight at a time, never the model.
    """
    reference = model if reference is None else reference
    owned = dict(model.named_parameters())
    device = torch.device(device) if device is not None else _local(next(model.parameters())).device
    gen = torch.Generator(device=device).manual_seed(seed)
    residual_std = INIT_STD / math.sqrt(2 * reference.config.num_hidden_layers)
    done: set[int] = set()
    for name, module in reference.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or id(weight) in done:
            continue  # tied weights are initialised once, by the module that comes first
        done.add(id(weight))
        value = torch.empty(weight.shape, dtype=weight.dtype, device=device)
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            std = residual_std if name.endswith(("o_proj", "down_proj")) else INIT_STD
            torch.nn.init.normal_(value, mean=0.0, std=std, generator=gen)
        else:
            torch.nn.init.ones_(value)  # RMSNorm
        _assign(owned.get(_join(name, "weight")), value)
        if getattr(module, "bias", None) is not None:
            _assign(owned.get(_join(name, "bias")), torch.zeros(module.bias.shape, dtype=module.bias.dtype, device=device))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def _assign(param: torch.Tensor | None, full: torch.Tensor) -> None:
    """Copy this rank's part of the full value into `param` (None: the weight lives on another stage)."""
    if param is None:
        return
    if hasattr(param, "device_mesh"):  # a DTensor: keep the local piece, with no communication
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
        param.to_local().copy_(full.to_local())
        return
    param.copy_(full)


def pretrained_source(path: Path) -> tuple[Path, dict[str, str]]:
    """(folder, from_pretrained keyword arguments) for `model.pretrained`: a .gguf file is read from its folder
    with `gguf_file`; a Hugging Face folder must hold config.json."""
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    if path.is_dir() and (path / "config.json").is_file():
        return path, {}
    raise UserError(f"model.pretrained={path}: not a Hugging Face folder (config.json) or a .gguf file")


def load_pretrained(model_cfg: ModelConfig, vocab_size: int, seq_len: int, **load_kwargs: Any):
    """`model.pretrained`: a Hugging Face folder (config.json + weights) or a .gguf file, loaded in fp32
    (`load_kwargs`, e.g. a 4-bit quantization_config, go to from_pretrained)."""
    from transformers import AutoModelForCausalLM

    path = Path(model_cfg.pretrained)
    folder, extra = pretrained_source(path)
    if "gguf_file" not in extra:
        from megalang.safe_load import require_safetensors

        require_safetensors(path, "model.pretrained")
        extra["use_safetensors"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="sdpa", attention_dropout=model_cfg.dropout, **extra,
            **load_kwargs,
        )
    except (OSError, ValueError) as e:
        raise UserError(f"model.pretrained={path}: cannot load ({str(e).splitlines()[0]})") from None
    drop_gguf_marker(model)
    check_pretrained_fits(model.config, path, vocab_size, seq_len)
    return model.train()


def check_pretrained_fits(config, path, vocab_size: int, seq_len: int) -> None:
    """The pretrained model must embed every token id of the data and take train.seq_len positions."""
    if config.vocab_size < vocab_size:
        raise UserError(
            f"model.pretrained={path}: the model has {config.vocab_size} token ids but the shards use "
            f"{vocab_size}; tokenize data.shards with the model's tokenizer"
        )
    max_pos = getattr(config, "max_position_embeddings", seq_len)
    if max_pos < seq_len:
        raise UserError(f"train.seq_len={seq_len} exceeds model.pretrained's max_position_embeddings ({max_pos})")


def drop_gguf_marker(model) -> None:
    """transformers dequantises a GGUF fully to fp32 but keeps a `gguf` quantizer marker (also in a folder saved
    from it), which makes save_pretrained (export) refuse the model; nothing quantized is left, so drop it."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if getattr(method, "value", method) == "gguf":
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
