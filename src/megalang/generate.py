"""Continue a prompt with a run or an exported model (greedy or temperature / top-k / top-p sampling)."""

from __future__ import annotations

from pathlib import Path

import torch

from megalang.errors import UserError


def generate(
    model: str | Path,
    prompt: str,
    max_new_tokens: int = 128,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 0.95,
    seed: int = 0,
    backend: str = "auto",
) -> str:
    """Return the prompt followed by its continuation. `backend` (model/load.py choose_backend): auto runs a .gguf
    in llama.cpp, an ONNX export folder in ONNX Runtime and everything else in transformers."""
    from megalang.model.load import GENERATE_BACKENDS, choose_backend, load_model_for_inference

    if max_new_tokens < 1 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise UserError("need --max-new-tokens >= 1, --temperature >= 0, --top-k >= 0 and 0 < --top-p <= 1")
    backend, path = choose_backend(model, backend, runtimes=GENERATE_BACKENDS)
    if backend == "onnxruntime":  # an ONNX export folder (model.onnx, manifest format onnx)
        from megalang.model.onnxrt import generate_onnx

        return generate_onnx(path, prompt, max_new_tokens, temperature, top_k, top_p, seed)
    if backend == "llama.cpp":
        from megalang.model.llamacpp import gguf_context_length, load_llamacpp

        # At least 2048 positions, as transformers generates past a small model's training length too.
        with load_llamacpp(path, n_ctx=min(max(gguf_context_length(path), 2048), 4096), logits_all=False) as llm:
            return generate_text_llamacpp(llm, prompt, max_new_tokens, temperature, top_k, top_p, seed)
    loaded = load_model_for_inference(path)
    return generate_text(loaded.model, loaded.tokenizer, prompt, max_new_tokens, temperature, top_k, top_p, seed)


def generate_text_llamacpp(llm, prompt, max_new_tokens=128, temperature=0.8, top_k=50, top_p=0.95, seed=0) -> str:
    """`generate_text` for a model open in llama.cpp (model/llamacpp.py): the same EOS-first prompt, stop at EOS."""
    from megalang.model.llamacpp import LlamaCppTokenizer, generate_ids

    tokenizer = LlamaCppTokenizer(llm)
    ids = [llm.eos_id] + tokenizer.encode(prompt, add_special_tokens=False)
    new = generate_ids(llm, ids, max_new_tokens, temperature, top_k, top_p, seed)
    return tokenizer.decode(ids[1:] + new, skip_special_tokens=True)


@torch.no_grad()
def generate_text(model, tokenizer, prompt, max_new_tokens=128, temperature=0.8, top_k=50, top_p=0.95, seed=0) -> str:
    eos = model.config.eos_token_id
    # Training saw every document right after an EOS separator, so the prompt starts the same way.
    ids = [eos] + tokenizer.encode(prompt, add_special_tokens=False)
    input_ids = torch.tensor([ids], device=next(model.parameters()).device)
    torch.manual_seed(seed)
    sampling = temperature > 0
    output = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_k=(top_k or None) if sampling else None,
        top_p=top_p if sampling else None,
        eos_token_id=eos,
        pad_token_id=model.config.pad_token_id if model.config.pad_token_id is not None else eos,
    )
    return tokenizer.decode(output[0, 1:].tolist(), skip_special_tokens=True)
