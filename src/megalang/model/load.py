"""Load a trained model and its tokenizer for inference, from a run folder, an exported HF folder or a GGUF file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.run_dir import RunDir


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel, eval mode (kind "llama.cpp": a model/llamacpp.py LlamaCppModel)
    tokenizer: Any  # transformers PreTrainedTokenizerFast (kind "llama.cpp": LlamaCppTokenizer)
    kind: str  # "run", "export", "gguf" (dequantised in transformers) or "llama.cpp"
    path: Path


# Who runs a model: transformers for every kind of model; llama.cpp for GGUF files (the default for them).
BACKENDS = ("auto", "transformers", "llama.cpp")  # what the evals run
GENERATE_BACKENDS = (*BACKENDS, "onnxruntime")  # `megalang generate` also runs ONNX export folders


def choose_backend(path: str | Path, backend: str = "auto", field: str = "--model",
                   runtimes: tuple[str, ...] = BACKENDS) -> tuple[str, Path]:
    """(the backend that runs `path`, the path to load): `auto` is llama.cpp for a .gguf file or a folder holding
    exactly one .gguf (and no config.json), onnxruntime for an ONNX export folder where `runtimes` has it,
    transformers for everything else (which refuses an ONNX folder in one line)."""
    from megalang.model.onnxrt import is_onnx_folder

    path = Path(path)
    if backend not in runtimes:
        raise UserError(f"--backend {backend}: expected one of {', '.join(runtimes)}")
    if "onnxruntime" in runtimes and (backend in ("auto", "onnxruntime")) and is_onnx_folder(path):
        return "onnxruntime", path
    if backend == "onnxruntime":
        raise UserError(f"{path}: --backend onnxruntime runs ONNX export folders; export one with "
                        "`megalang export --format onnx` or use --backend auto")
    if path.is_dir() and not (path / "config.json").is_file() and not RunDir.looks_like_run(path):
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) > 1:
            raise UserError(f"{path}: holds {len(ggufs)} .gguf files; pass {field} one of them")
        path = ggufs[0] if ggufs else path
    is_gguf = path.is_file() and path.suffix == ".gguf"
    if backend == "llama.cpp" and not is_gguf:
        raise UserError(f"{path}: --backend llama.cpp runs .gguf files; export one with `megalang export --format gguf` "
                        "or use --backend transformers")
    if backend == "auto":
        backend = "llama.cpp" if is_gguf else "transformers"
    return backend, path


def load_model_for_inference(path: str | Path, step: int | None = None, field: str = "--model") -> LoadedModel:
    """A run folder (newest complete checkpoint, or `step`), a Hugging Face folder with config.json (safetensors
    weights only), or a .gguf file. `field` names the option in error messages."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model folder; pass a run folder or an exported folder")
    if path.is_dir() and RunDir.looks_like_run(path):
        model, _cfg = load_trained_model(path, step=step)
        return LoadedModel(model, run_tokenizer(RunDir(path).tokenizer), "run", path)
    if path.is_dir() and (path / "model.onnx").is_file():  # export/onnx.py: no PyTorch weights to load
        raise UserError(f"{field}={path}: an ONNX export runs only in `megalang generate`; pass the run or its "
                        "--format hf export")
    if path.is_dir() and (path / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from megalang.safe_load import require_safetensors

        require_safetensors(path, field)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot load as a Hugging Face model ({str(e).splitlines()[0]})") from None
        model.eval()
        return LoadedModel(model, tokenizer, "export", path)
    if path.is_file() and path.suffix == ".gguf":
        return load_gguf(path)
    raise UserError(f"{path}: neither a run folder (checkpoints/), a Hugging Face folder (config.json) nor a .gguf file")


def run_tokenizer(folder: Path):
    """A run's copy of its tokenizer: megalang's own (`tokenizer train`) or, for a run from model.pretrained, the
    pretrained model's Hugging Face tokenizer (chat template included)."""
    from megalang.store.manifest import read_manifest

    if read_manifest(folder).get("stage") == "tokenizer.pretrained":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    from megalang.data.tokenizer import load_hf_tokenizer

    return load_hf_tokenizer(folder)


def load_gguf(path: Path) -> LoadedModel:
    """A GGUF file (llama.cpp format): transformers dequantises it to an fp32 model; its tokenizer (and chat
    template) comes from the same file. Needs the `gguf` package (extra `pretrained`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except ImportError as e:
        raise UserError(f"{path}: reading GGUF needs the gguf package ({e}); pip install 'megalang[pretrained]'") from None
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot load as a GGUF model ({str(e).splitlines()[0]})") from None
    model.eval()
    return LoadedModel(model, match_gguf_tokenizer(tokenizer, path), "gguf", path)


def match_gguf_tokenizer(tokenizer, path: Path):
    """transformers reads every "llama" (SentencePiece) GGUF vocabulary as Llama 2's: a "▁" put before the text and
    special-token text parsed as the token. A file that says add_space_prefix=false (megalang's own tokenizers,
    export/gguf_vocab.py) gets neither, so it encodes as the tokenizer it was exported from and as llama.cpp does."""
    from gguf import GGUFReader
    from tokenizers import decoders, pre_tokenizers

    fields = GGUFReader(path).fields
    if "tokenizer.ggml.add_space_prefix" not in fields or fields["tokenizer.ggml.model"].contents() != "llama":
        return tokenizer
    if fields["tokenizer.ggml.add_space_prefix"].contents():
        return tokenizer
    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.split_special_tokens = True
    return tokenizer


def load_trained_model(run_dir: str | Path, step: int | None = None):
    """A run's checkpoint (the newest complete one, or `step`) as (the model in eval mode, on CPU, fp32; its
    RunConfig). One process: the whole model is built, whatever layout saved it."""
    import torch
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM

    from megalang.config import RunConfig, build_config
    from megalang.model.build import materialize
    from megalang.safe_load import load_dcp, quiet_dcp
    from megalang.store.checkpoints import find_checkpoint, read_run_config, verify_files
    from megalang.store.files import read_json
    from megalang.store.run_dir import CheckpointFiles

    path = find_checkpoint(run_dir, step)
    verify_files(path)  # every file against COMPLETE.json first; also the LoRA branch's adapters (load_lora_checkpoint reads them unchecked)
    cfg = build_config(RunConfig, read_run_config(path)["config"], str(path / CheckpointFiles.RUN_CONFIG))
    if cfg.lora.rank:  # adapters only on disk: the base comes from model.pretrained (model/lora.py)
        from megalang.model.lora import load_lora_checkpoint

        with quiet_dcp():
            return load_lora_checkpoint(path, cfg), cfg
    raw = read_json(path / CheckpointFiles.MODEL_CONFIG, "model config")
    config = CONFIG_MAPPING[raw["model_type"]].from_dict(raw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    materialize(model, "cpu", seed=None)
    state = {"model": get_model_state_dict(model)}
    with quiet_dcp():
        load_dcp(state, path)  # never unpickles arbitrary objects
    set_model_state_dict(model, state["model"])
    return model.eval(), cfg
