"""What every export format starts from: a trained model in fp32 and its tokenizer files, read from a run folder
(the newest complete checkpoint or `step`; a LoRA run merged into its base) or from a Hugging Face folder that
`megalang export` wrote earlier."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.manifest import MANIFEST, describe_input
from megalang.store.run_dir import RunDir

# What a tokenizer artifact holds that a Hugging Face folder needs (spm.model is kept as the slow-tokenizer file).
TOKENIZER_FILES = {
    "tokenizer.json": "tokenizer.json",
    "tokenizer_config.json": "tokenizer_config.json",
    "special_tokens_map.json": "special_tokens_map.json",
    "spm.model": "tokenizer.model",
    "chat_template.jinja": "chat_template.jinja",  # a pretrained model's tokenizer (fine-tuning runs, #6)
}


@dataclass
class Source:
    model: Any  # transformers PreTrainedModel, fp32, eval mode, on CPU
    tokenizer_files: dict[str, Path]  # Hugging Face name (the values of TOKENIZER_FILES) -> file
    path: Path  # the run or export folder
    kind: str  # "run" or "export"
    run_config: Any | None  # the run's RunConfig (None for an export folder)
    step: int | None

    def copy_tokenizer(self, dest: Path) -> None:
        """The tokenizer files into `dest` under their Hugging Face names."""
        for name, src in self.tokenizer_files.items():
            shutil.copyfile(src, dest / name)

    def input(self) -> dict[str, Any]:
        """How the exported artifact names what it came from (store/manifest.py describe_input). A run that has no
        manifest yet (still training, or killed) is named by the checkpoint exported and its COMPLETE.json hash."""
        if self.kind == "run" and not (self.path / MANIFEST).is_file():
            from megalang.store.checkpoints import find_checkpoint
            from megalang.store.files import sha256_file
            from megalang.store.run_dir import COMPLETE

            ckpt = find_checkpoint(self.path, self.step)
            return {"path": str(self.path.resolve()), "kind": "artifact", "stage": "train", "manifest_sha256": None,
                    "checkpoint": ckpt.name, "complete_sha256": sha256_file(ckpt / COMPLETE)}
        return describe_input(self.path)


def load_source(path: str | Path, step: int | None = None) -> Source:
    """A run folder (LoRA runs merged) or a Hugging Face export folder (safetensors only), as fp32 on CPU."""
    path = Path(path)
    if path.is_dir() and RunDir.looks_like_run(path):
        from megalang.model.load import load_trained_model

        model, cfg = load_trained_model(path, step=step)  # a LoRA run comes back merged into its base
        tok = RunDir(path).tokenizer
        files = {dst: tok / src for src, dst in TOKENIZER_FILES.items() if (tok / src).is_file()}
        if "tokenizer.json" not in files:
            raise UserError(f"{tok}: tokenizer.json missing; the run folder is incomplete")
        return Source(model, files, path, "run", cfg, step)
    if path.is_dir() and (path / "config.json").is_file():
        if step is not None:
            raise UserError(f"--step: {path} is an exported folder with one set of weights; drop --step")
        from megalang.model.load import load_model_for_inference

        if not (path / MANIFEST).is_file():
            raise UserError(f"{path}: no {MANIFEST}; export from a run or a folder written by `megalang export`")
        loaded = load_model_for_inference(path, field="--run")
        files = {dst: path / dst for dst in TOKENIZER_FILES.values() if (path / dst).is_file()}
        if "tokenizer.json" not in files:
            raise UserError(f"{path}: tokenizer.json missing; re-export the run")
        return Source(loaded.model, files, path, "export", None, None)
    if not path.exists():
        raise UserError(f"{path}: no such folder; pass --run a run folder or a Hugging Face folder from `megalang export`")
    raise UserError(f"{path}: not a run folder (no checkpoints/) nor an exported Hugging Face folder (config.json); "
                    "pass the run.dir of a `megalang train` run")
