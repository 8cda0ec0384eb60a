"""`megalang export --format onnx [--quant int8]`: a folder ONNX Runtime runs (model.onnx with a KV cache, the Hugging
Face config.json, generation config and tokenizer files), optionally with dynamically quantised int8 weights.

Why PyTorch's own exporter and not the Hugging Face one (optimum-onnx): optimum-onnx 0.1.0, its latest release,
declares transformers<4.58 and does not import under the transformers 5 this project runs:
    `from optimum.exporters.onnx import main_export` ->
    ImportError: cannot import name 'get_parameter_dtype' from 'transformers.modeling_utils'
(optimum-onnx 0.1.0 + optimum 2.1.0 installed --no-deps next to transformers 5.25; upstream: huggingface/optimum-onnx
issue #114, "transformers>=5.0.0 support", open). `torch.onnx.export(..., dynamo=True)` (torch.export + onnxscript,
maintained in PyTorch) exports the transformers model itself, cache included, with the logits equal to transformers'
within 1e-6 on the tiny model and 1e-4 on SmolLM2-135M (tests/export/test_onnx.py).

The graph (one model for the prompt and for every next token, like optimum's merged decoder):
    inputs   input_ids [batch, sequence] int64, attention_mask [batch, past + sequence] int64,
             position_ids [batch, sequence] int64, past_key_values.{i}.key / .value [batch, kv_heads, past, head_dim]
    outputs  logits [batch, sequence, vocab] float32, present.{i}.key / .value [batch, kv_heads, past + sequence, head_dim]
A caller without a cache passes past tensors of length 0 (model/onnxrt.py does).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from megalang.errors import UserError
from megalang.export.source import Source
from megalang.model.onnxrt import MODEL_FILE

QUANTS = ("int8",)
SUPPORTED = ("llama",)  # model_type values whose cache is one plain DynamicCache layer per block (tested: Llama)
FP32_MODULES = (".mlp.down_proj",)  # kept fp32 by --quant int8 (quantize_int8 says why)
OPSET = 18
_TWO_GB = 2 * 1024**3  # protobuf's limit for one file: larger weights go to external data beside model.onnx


def check_quant(quant: str | None) -> None:
    if quant is not None and quant not in QUANTS:
        raise UserError(f"--quant: '{quant}' is not an ONNX weight type; use --quant int8 (dynamic int8) or none (fp32)")


def require_onnx() -> None:
    """The exporter needs onnx + onnxscript (torch.onnx's dynamo path), the int8 step and the runtime onnxruntime."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"--format onnx needs {', '.join(missing)}; pip install 'megalang[onnx]'")


def check_supported(source: Source) -> None:
    model_type = source.model.config.model_type
    if model_type not in SUPPORTED:
        raise UserError(f"{source.path}: model type '{model_type}' is not supported by the ONNX export "
                        f"(supported: {', '.join(SUPPORTED)}); export --format hf instead")


def past_names(num_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]


def write_onnx(source: Source, dest: Path, quant: str | None = None) -> dict[str, Any]:
    """Write model.onnx (fp32, or int8 weights with `quant`), config, generation config and tokenizer into the
    staging folder `dest`; the counts for its manifest."""
    from megalang.export.hf import apply_generation_defaults

    check_quant(quant)
    check_supported(source)
    model = source.model.eval()
    apply_generation_defaults(model)
    fp32 = dest / MODEL_FILE
    export_graph(model, fp32)
    if quant == "int8":
        quantize_int8(fp32)
    model.config.save_pretrained(dest)
    model.generation_config.save_pretrained(dest)
    source.copy_tokenizer(dest)
    return {"params": sum(p.numel() for p in model.parameters()), "layers": model.config.num_hidden_layers,
            "onnx_bytes": sum(f.stat().st_size for f in dest.iterdir() if f.name.startswith(MODEL_FILE)),
            "opset": OPSET}


def export_graph(model, path: Path) -> None:
    """The transformers model (with its cache flattened into named tensors) as an ONNX graph at `path`."""
    config = model.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    batch, seq, past = 2, 3, 4  # example sizes; all three axes are exported dynamic (past may be 0)
    ids = torch.zeros(batch, seq, dtype=torch.long)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    positions = torch.arange(past, past + seq).expand(batch, seq)
    cache = tuple(torch.zeros(batch, kv_heads, past, head_dim) for _ in range(2 * layers))
    names = past_names(layers)
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
               "position_ids": {0: "batch", 1: "sequence"}, "past": tuple({0: "batch", 2: "past"} for _ in names)}
    with warnings.catch_warnings(), torch.no_grad(), quiet_logger("torch.onnx._internal.exporter._registration"):
        warnings.simplefilter("ignore")  # torch.export's deprecation chatter and "torchvision is not installed": not
        # actionable for the user
        program = torch.onnx.export(
            CacheFlattened(model).eval(), (ids, mask, positions, *cache), dynamic_shapes=dynamic,
            input_names=["input_ids", "attention_mask", "position_ids", *names],
            output_names=["logits", *(n.replace("past_key_values", "present") for n in names)],
            dynamo=True, opset_version=OPSET, verbose=False, report=False)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    program.save(str(path), external_data=weights >= _TWO_GB)


def quantize_int8(path: Path) -> None:
    """Replace the fp32 graph at `path` by ONNX Runtime's dynamic int8 quantisation of it; only the final model stays
    in the folder. Weights int8 per output channel (MatMul) or per tensor (the embedding Gather); activations are
    quantised per tensor at run time, which is why the MLP down projections stay fp32: their inputs carry the few
    huge activations of Llama models, and one scale for the whole tensor wipes out the rest. On SmolLM2-135M
    (512 held-out tokens) perplexity rises 62 % with every MatMul quantised per tensor, 5.5 % as done here."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_name("model.int8.onnx")
    with quiet_logger(""):  # the root logger's advice to pre-process, which is for static (calibrated) quantisation
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=nodes_in_modules(path, FP32_MODULES))
    for f in path.parent.iterdir():
        if f.name.startswith(MODEL_FILE):  # the fp32 graph and any external data beside it
            f.unlink()
    tmp.rename(path)


def nodes_in_modules(path: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Names of the graph's nodes made inside a torch module whose name ends with one of `suffixes`, from the module
    path the dynamo exporter records on every node (metadata `pkg.torch.onnx.name_scopes`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    found = []
    for node in graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(f"{suffix}'" in scopes for suffix in suffixes):
            found.append(node.name)
    return found


@contextlib.contextmanager
def quiet_logger(name: str):
    """Raise the logger `name` to ERROR for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class CacheFlattened(torch.nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present): the cache as plain tensors,
    which is what an ONNX graph can take and return."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i in range(len(past) // 2):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)
