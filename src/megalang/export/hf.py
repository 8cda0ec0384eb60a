"""A plain Hugging Face folder: safetensors weights, config, tokenizer, generation config.

The folder loads with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` and no megalang installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megalang.export.source import Source


def write_hf(source: Source, dest: Path) -> dict[str, Any]:
    """Write the model and tokenizer into the (staging) folder `dest`; the counts for its manifest."""
    model = source.model
    apply_generation_defaults(model)
    model.save_pretrained(dest, safe_serialization=True)
    source.copy_tokenizer(dest)
    return {"params": sum(p.numel() for p in model.parameters())}


def apply_generation_defaults(model) -> None:
    """Sampling defaults that suit a small pretrained model; any generate() call can override them."""
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_k, gen.top_p = True, 0.8, 50, 0.95
    gen.max_new_tokens = 128
    gen.bos_token_id = model.config.bos_token_id
    gen.eos_token_id = model.config.eos_token_id
    gen.pad_token_id = model.config.pad_token_id
