"""`megalang export --format gguf`: one llama.cpp file (Llama architecture) with the weights in the chosen type,
the tokenizer (SentencePiece scores or byte-level BPE merges), the special tokens and the chat template.

Written with the `gguf` package (GGUFWriter, its tensor-name map and numpy quantisers), following what
llama.cpp's convert_hf_to_gguf.py does for LLaMA: Q/K rows permuted to llama.cpp's rope layout, norms kept f32,
no output.weight when the embeddings are tied.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from megalang.errors import UserError
from megalang.export.source import Source

# --quant → (the tensor type of the weight matrices, the file type llama.cpp reports). Only the types the gguf
# package quantises in numpy; the k-quants (q4_k, q6_k, …) and i-quants need llama.cpp's own `llama-quantize`.
QUANTS = {
    "f32": ("F32", "ALL_F32"), "f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q5_1": ("Q5_1", "MOSTLY_Q5_1"), "q5_0": ("Q5_0", "MOSTLY_Q5_0"),
    "q4_1": ("Q4_1", "MOSTLY_Q4_1"), "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
DEFAULT_QUANT = "f16"
# Below 8 bits the token embedding (which is also the output head when tied) stays q8_0: llama-quantize keeps
# that tensor at a higher precision too (q6_k there, which the gguf package cannot write).
_LOW_BIT = {"q5_1", "q5_0", "q4_1", "q4_0"}
_EMBEDDING_NAMES = ("token_embd.weight", "output.weight")


def gguf_name(quant: str) -> str:
    return f"model-{quant}.gguf"


def check_quant(quant: str | None) -> str:
    """The --quant value to use (default f16), or a UserError naming the supported ones."""
    quant = (quant or DEFAULT_QUANT).lower()
    if quant in QUANTS:
        return quant
    import gguf

    if quant.upper() in gguf.GGMLQuantizationType.__members__:
        raise UserError(f"--quant {quant}: the gguf package cannot write this type; choose one of {', '.join(QUANTS)} "
                        f"(or run llama.cpp's llama-quantize on the f16 file)")
    raise UserError(f"--quant {quant}: not a GGUF weight type; choose one of {', '.join(QUANTS)}")


def check_architecture(config) -> None:
    """The writer knows the plain Llama block (RMSNorm, rotary, SwiGLU, no biases); anything else is refused."""
    problems = []
    if getattr(config, "model_type", None) != "llama":
        problems.append(f"model_type '{getattr(config, 'model_type', None)}'")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("attention/MLP biases")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"activation '{config.hidden_act}'")
    if _rope(config)[1] not in ("default", "linear"):
        problems.append(f"rope scaling '{_rope(config)[1]}'")
    if problems:
        raise UserError(f"--format gguf: the GGUF writer supports Llama models (as all megalang presets are), not "
                        f"{', '.join(problems)}; export this model with --format hf")


def _rope(config) -> tuple[float, str, float]:
    """(theta, scaling type, linear factor) from transformers 5's rope_parameters or the older rope_theta/rope_scaling."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    theta = float(params.get("rope_theta", getattr(config, "rope_theta", 10_000.0)))
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    factor = float(params.get("factor") or scaling.get("factor") or 1.0)
    return theta, kind, factor


def write_gguf(source: Source, dest: Path, quant: str) -> dict[str, Any]:
    """Write `dest/model-<quant>.gguf` from the fp32 model and its tokenizer files; the counts for the manifest."""
    import gguf

    from megalang.export.gguf_vocab import add_vocab

    model, config = source.model, source.model.config
    check_architecture(config)
    path = dest / gguf_name(quant)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        add_hparams(writer, config, getattr(gguf.LlamaFileType, QUANTS[quant][1]))
        writer.add_name(source.path.name)
        with tempfile.TemporaryDirectory(prefix="megalang-gguf-") as scratch:
            add_vocab(writer, _tokenizer_folder(source, Path(scratch)), config)
        counts = add_tensors(writer, model, quant)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return {**counts, "file_bytes": path.stat().st_size, "quant": quant, "file": path.name}


def add_hparams(writer, config, file_type: int) -> None:
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    theta, kind, factor = _rope(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(head_dim)
    if kind == "linear" and factor != 1.0:
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int(file_type))


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Q/K rows from Hugging Face's rotate-half layout to llama.cpp's interleaved pairs (convert_hf_to_gguf
    LlamaModel.permute; `n_head` is the KV head count for K)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def add_tensors(writer, model, quant: str) -> dict[str, int]:
    """Every weight under its llama.cpp name, in the tensor type `tensor_type` picks; the counts by type."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(config.tie_word_embeddings)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    params, by_type = 0, {}
    for hf_name, tensor in model.state_dict().items():
        if hf_name.endswith("rotary_emb.inv_freq") or (tied and hf_name == "lm_head.weight"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UserError(f"--format gguf: no llama.cpp name for the tensor {hf_name}; export with --format hf")
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = permute_rope(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = permute_rope(data, kv_heads)
        qtype = tensor_type(name, data.shape, quant)
        writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)
        params += data.size
        by_type[qtype.name.lower()] = by_type.get(qtype.name.lower(), 0) + 1
    return {"params": params, "tensors": sum(by_type.values()), "tensor_types": by_type}


def tensor_type(name: str, shape: tuple[int, ...], quant: str):
    """Vectors (norms) stay f32; a matrix whose rows do not split into whole blocks falls back to f16 (as
    convert_hf_to_gguf does); below 8 bits the embedding/output head is q8_0."""
    import gguf

    if len(shape) < 2:
        return gguf.GGMLQuantizationType.F32
    choice = QUANTS["q8_0" if quant in _LOW_BIT and name in _EMBEDDING_NAMES else quant][0]
    qtype = gguf.GGMLQuantizationType[choice]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        return gguf.GGMLQuantizationType.F16
    return qtype


def _tokenizer_folder(source: Source, scratch: Path) -> Path:
    """The tokenizer files under their Hugging Face names, with the model's config.json beside them (the gguf
    package's vocab readers look for exactly these names in one folder)."""
    source.copy_tokenizer(scratch)
    (scratch / "config.json").write_text(json.dumps(source.model.config.to_dict()), encoding="utf-8")
    return scratch
