"""`megalang export`: a run (or an exported Hugging Face folder) as a release folder in one format.

Formats: `hf` (safetensors + config + tokenizer, export/hf.py), `gguf` (one llama.cpp file, export/gguf.py),
`onnx` (model.onnx for ONNX Runtime, fp32 or dynamic int8, export/onnx.py). Every format reads its model through
export/source.py and ends with the release files (export/release.py: model card, datasheet, ML-BOM) and the
folder's manifest.json, which points back at the run so `megalang lineage` reaches the raw corpus from the release;
`sign` then signs the folder (export/sign.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from megalang.errors import UserError
from megalang.export.hf import apply_generation_defaults
from megalang.export.source import TOKENIZER_FILES
from megalang.store.files import read_json, staging_dir
from megalang.store.manifest import write_manifest
from megalang.store.run_dir import RunDir

__all__ = ["FORMATS", "apply_generation_defaults", "export"]

FORMATS = ("hf", "gguf", "onnx")
MANIFEST_FORMAT = {"hf": "huggingface", "gguf": "gguf", "onnx": "onnx"}  # the manifest's `format` field


def export(run: str | Path, out: str | Path, step: int | None = None, overwrite: bool = False,
           merge: bool = False, fmt: str = "hf", quant: str | None = None,
           sign: str | Path | None = None) -> dict[str, Any]:
    """Export `run` (a run folder, or for the edge formats also an exported HF folder) into the folder `out`.
    A LoRA run in `hf` format exports its peft adapter folder unless `merge`; every other format merges.
    `sign`: an EC private key (PEM) that signs the finished folder into model.sig."""
    from megalang.export.release import Release
    from megalang.export.source import load_source

    if fmt not in FORMATS:
        raise UserError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    run = Path(run)
    release = Release.prepare(out, fmt, quant, sign)  # a bad key fails here, before any model is read
    if fmt == "hf":
        if quant is not None:
            raise UserError("--quant: the hf format writes fp32 safetensors; drop --quant or pick --format gguf|onnx")
        if not run.is_dir() or not RunDir.looks_like_run(run):
            raise UserError(f"{run}: not a run folder (no checkpoints/); pass the run.dir of a `megalang train` run")
        if not merge:
            from megalang.model.lora import maybe_export_adapter

            adapter = maybe_export_adapter(run, out, step, overwrite, TOKENIZER_FILES, release)
            if adapter is not None:
                return adapter
    if fmt == "onnx":
        from megalang.export.onnx import check_quant, require_onnx

        check_quant(quant)
        require_onnx()
    if fmt == "gguf":
        from megalang.export.gguf import check_architecture, check_quant

        quant = check_quant(quant)  # before the (slow) model load
        if (run / "config.json").is_file():  # an exported folder: its architecture too
            check_architecture(SimpleNamespace(**read_json(run / "config.json", "model config")))
    source = load_source(run, step)
    if fmt == "gguf":
        check_architecture(source.model.config)  # a run's model, before anything is written
    with staging_dir(out, overwrite) as tmp:
        counts = write_format(source, tmp, fmt, quant)
        config = {"run": str(run.resolve()), "step": step, "format": fmt, "quant": quant}
        if source.run_config is not None:
            config["model"] = source.run_config.model.model_dump()
        files = release.describe_source(tmp, source)  # README.md, DATASHEET.md, bom.cdx.json
        manifest = write_manifest(tmp, "export", config=config, inputs=[source.input()], counts=counts,
                                  known_files=files, format=MANIFEST_FORMAT[fmt])
        release.seal(tmp)
        return manifest


def write_format(source, dest: Path, fmt: str, quant: str | None) -> dict[str, Any]:
    """Write `source` in format `fmt` into the staging folder `dest`; the counts for the manifest."""
    if fmt == "onnx":
        from megalang.export.onnx import write_onnx

        return write_onnx(source, dest, quant)
    if fmt == "gguf":
        from megalang.export.gguf import write_gguf

        return write_gguf(source, dest, quant)
    from megalang.export.hf import write_hf

    return write_hf(source, dest)
