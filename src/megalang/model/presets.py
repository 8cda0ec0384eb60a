"""Named Llama-style model sizes (transformers `LlamaConfig` keyword arguments) and an analytic parameter count.

`debug` is for unit tests, `tiny` for the 2-core demo; the large ones follow the published Llama 3 shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from megalang.errors import UserError

# Every preset is a complete LlamaConfig shape. vocab_size is the default used for counting and planning;
# build_model replaces it with the tokenizer's size. Rope is the plain (unscaled) kind everywhere: the
# Llama 3.1/3.2 long-context scaling only matters beyond the 8k tokens these runs train on.
PRESETS: dict[str, dict[str, Any]] = {
    # ~1M parameters: a training step on 4×32 tokens takes milliseconds, so every test can train.
    "debug": dict(
        vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rope_theta=10_000.0, tie_word_embeddings=False,
    ),
    # ~7M parameters: wide enough to learn code, shallow enough for ~2 steps/s of 4k tokens on 2 CPU cores
    # in bf16 (measured; a 6-layer variant was 25% slower for little gain in a 6-minute budget).
    "tiny": dict(
        vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, rope_theta=10_000.0, tie_word_embeddings=False,
    ),
    # ~125M parameters (GPT-2 small scale), GQA 12/4.
    "small": dict(
        vocab_size=32_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=4, rope_theta=10_000.0, tie_word_embeddings=False,
    ),
    # Llama 3.2 1B (1.24B with its tied embeddings).
    "1b": dict(
        vocab_size=128_256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, rope_theta=500_000.0, tie_word_embeddings=True,
    ),
    # Llama 3 8B (8.03B).
    "8b": dict(
        vocab_size=128_256, hidden_size=4096, intermediate_size=14_336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, rope_theta=500_000.0, tie_word_embeddings=False,
    ),
    # Llama 3 70B (70.6B).
    "70b": dict(
        vocab_size=128_256, hidden_size=8192, intermediate_size=28_672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, rope_theta=500_000.0, tie_word_embeddings=False,
    ),
    # 100.3B: 96 layers split evenly over 2/4/8/16/32 pipeline stages; 80 query / 8 KV heads of 128 and an
    # MLP width of 25600 divide by tensor-parallel degrees up to 8.
    "100b": dict(
        vocab_size=128_256, hidden_size=10_240, intermediate_size=25_600, num_hidden_layers=96,
        num_attention_heads=80, num_key_value_heads=8, rope_theta=500_000.0, tie_word_embeddings=False,
    ),
}


def get_preset(name: str) -> dict[str, Any]:
    """A copy of the preset's LlamaConfig keyword arguments."""
    if name not in PRESETS:
        raise UserError(f"model.preset '{name}' is unknown; choose one of: {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def _get(config: Mapping[str, Any] | Any, key: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def layer_params(config: Mapping[str, Any] | Any) -> int:
    """Parameters of one decoder block: attention (GQA), SwiGLU MLP and the two RMSNorm weights."""
    d = _get(config, "hidden_size")
    heads = _get(config, "num_attention_heads")
    kv_heads = _get(config, "num_key_value_heads") or heads
    head_dim = _get(config, "head_dim") or d // heads
    attn = d * heads * head_dim * 2 + d * kv_heads * head_dim * 2  # q and o; k and v
    if _get(config, "attention_bias", False):
        attn += heads * head_dim + 2 * kv_heads * head_dim + d
    mlp = 3 * d * _get(config, "intermediate_size")
    if _get(config, "mlp_bias", False):
        mlp += 2 * _get(config, "intermediate_size") + d
    return attn + mlp + 2 * d


def count_params(config: Mapping[str, Any] | Any) -> int:
    """Parameter count of a LlamaForCausalLM with this config (a preset dict or a LlamaConfig), no model built."""
    d, vocab = _get(config, "hidden_size"), _get(config, "vocab_size")
    embeddings = vocab * d * (1 if _get(config, "tie_word_embeddings", False) else 2)
    return embeddings + _get(config, "num_hidden_layers") * layer_params(config) + d  # + final norm
