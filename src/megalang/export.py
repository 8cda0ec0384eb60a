"""Export a run to a plain Hugging Face folder: safetensors weights, config, tokenizer, generation config.

The folder loads with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` and no megalang installed;
its manifest.json points back at the run, so `megalang lineage` reaches the raw corpus from it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.files import staging_dir
from megalang.store.manifest import describe_input, write_manifest
from megalang.store.run_dir import RunDir

# What a tokenizer artifact holds that a Hugging Face folder needs (spm.model is kept as the slow-tokenizer file).
_TOKENIZER_FILES = {
    "tokenizer.json": "tokenizer.json",
    "tokenizer_config.json": "tokenizer_config.json",
    "special_tokens_map.json": "special_tokens_map.json",
    "spm.model": "tokenizer.model",
    "chat_template.jinja": "chat_template.jinja",  # a pretrained model's tokenizer (fine-tuning runs, #6)
}


def export(run: str | Path, out: str | Path, step: int | None = None, overwrite: bool = False,
           merge: bool = False) -> dict[str, Any]:
    """A LoRA run exports merged weights with `merge`, else its peft adapter folder (base: model.pretrained)."""
    from megalang.model.load import load_trained_model

    run = Path(run)
    if not run.is_dir() or not RunDir.looks_like_run(run):
        raise UserError(f"{run}: not a run folder (no checkpoints/); pass the run.dir of a `megalang train` run")
    if not merge:
        from megalang.model.lora import maybe_export_adapter

        adapter = maybe_export_adapter(run, out, step, overwrite, _TOKENIZER_FILES)
        if adapter is not None:
            return adapter
    model, cfg = load_trained_model(run, step=step)
    tokenizer_dir = RunDir(run).tokenizer
    if not (tokenizer_dir / "tokenizer.json").is_file():
        raise UserError(f"{tokenizer_dir}: tokenizer.json missing; the run folder is incomplete")
    with staging_dir(out, overwrite) as tmp:
        apply_generation_defaults(model)
        model.save_pretrained(tmp, safe_serialization=True)
        for src, dst in _TOKENIZER_FILES.items():
            if (tokenizer_dir / src).is_file():
                shutil.copyfile(tokenizer_dir / src, tmp / dst)
        params = sum(p.numel() for p in model.parameters())
        return write_manifest(
            tmp,
            "export",
            config={"run": str(run.resolve()), "step": step, "model": cfg.model.model_dump()},
            inputs=[describe_input(run)],
            counts={"params": params},
            format="huggingface",
        )


def apply_generation_defaults(model) -> None:
    """Sampling defaults that suit a small pretrained model; any generate() call can override them."""
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_k, gen.top_p = True, 0.8, 50, 0.95
    gen.max_new_tokens = 128
    gen.bos_token_id = model.config.bos_token_id
    gen.eos_token_id = model.config.eos_token_id
    gen.pad_token_id = model.config.pad_token_id
