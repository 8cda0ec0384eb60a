"""The run folder's layout: the one place that spells the name of every file and folder a run holds.

    RUN/config.yaml            the user's config as given (re-running `megalang train RUN/config.yaml` resumes)
    RUN/resolved.json          values derived at setup (e.g. where data.sft was tokenized), beside the config
    RUN/checkpoints/step-N/    a complete checkpoint (step-N.tmp/ while written); CheckpointFiles names its files
    RUN/metrics.jsonl          one JSON object per logged step
    RUN/resumes.jsonl          one line per resume that changed a benign setting
    RUN/summary.json           written when the run finishes
    RUN/manifest.json          written last: the run is a complete artifact
    RUN/report.html            a view on the run, rebuilt by `megalang report` (its PNGs in RUN/report_files/)
    RUN/tokenizer/             a copy of the shards' tokenizer, so export and generate need nothing outside
    RUN/sft-data/              data.sft tokenized with the model's tokenizer
    RUN/canaries.json          data.canaries: the secrets inserted, their template and repeats, and control secrets
    RUN/canaries.jsonl         data.canaries: the canary chats added to the train split (each line once per repeat)
    RUN/privacy.json           written by `megalang eval privacy`: ε beside canary exposure and membership inference
    RUN/classify-data/         data.classify (and data.classify_val) tokenized with the model's tokenizer
    RUN/federated-base.safetensors  a federated site: its trainable weights before round 1 (global = base + sum)
    RUN/federated.jsonl        a federated site: one line per round (what it received, trained and sent)

A federation's server writes a folder of its own (`ServerDir`):

    SERVER/rounds/round-N/     the global update after round N (global.safetensors) and state.json; round-N.tmp
                               while written
    SERVER/rounds.jsonl        one line per round: accepted and rejected sites, reasons, bytes, times, ε
    SERVER/summary.json        written when the last round is done
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from megalang.store.manifest import MANIFEST

_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class CheckpointFiles:
    """The JSON files of a checkpoint folder beside DCP's tensor files."""

    COMPLETE = "COMPLETE.json"  # written last: every file's size and SHA-256; makes the folder discoverable
    TRAINER_STATE = "trainer_state.json"  # step, tokens, scheduler, loader, RNG, loss scaler
    RUN_CONFIG = "run_config.json"  # the resolved RunConfig plus derived values (global batch, tokenizer hash)
    MODEL_CONFIG = "model_config.json"  # the transformers config, so the model rebuilds without the recipe
    DCP_METADATA = ".metadata"  # DCP's index of the tensor files


COMPLETE = CheckpointFiles.COMPLETE


@dataclass(frozen=True)
class RunDir:
    """Every path of one run folder (see the module docstring)."""

    root: Path

    @classmethod
    def of(cls, run: RunDir | str | os.PathLike) -> RunDir:
        return run if isinstance(run, RunDir) else cls(Path(run))

    @staticmethod
    def looks_like_run(path: Path) -> bool:
        """A folder `megalang train` wrote (possibly still training)."""
        run = RunDir(Path(path))
        return run.checkpoints.is_dir() or run.config.is_file()

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def resolved(self) -> Path:
        return self.root / "resolved.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def step(self, n: int) -> Path:
        return self.checkpoints / f"step-{n}"

    def step_tmp(self, n: int) -> Path:
        return self.checkpoints / f"step-{n}.tmp"

    def step_folders(self) -> list[tuple[int, Path]]:
        """(step, folder) of every `step-N` folder, complete or not, unordered."""
        found = []
        for path in self.checkpoints.iterdir() if self.checkpoints.is_dir() else []:
            match = _STEP_DIR.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
        return found

    def tmp_folders(self) -> list[Path]:
        return list(self.checkpoints.glob("step-*.tmp")) if self.checkpoints.is_dir() else []

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def resumes(self) -> Path:
        return self.root / "resumes.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def report_plots(self) -> Path:
        return self.root / "report_files"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def sft_data(self) -> Path:
        return self.root / "sft-data"

    @property
    def canaries(self) -> Path:
        return self.root / "canaries.json"

    @property
    def canary_chats(self) -> Path:
        return self.root / "canaries.jsonl"

    @property
    def privacy(self) -> Path:
        return self.root / "privacy.json"

    @property
    def classify_data(self) -> Path:
        return self.root / "classify-data"

    @property
    def federated_base(self) -> Path:
        return self.root / "federated-base.safetensors"

    @property
    def federated_log(self) -> Path:
        return self.root / "federated.jsonl"

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


@dataclass(frozen=True)
class ServerDir:
    """Every path of a federation server's folder (see the module docstring)."""

    root: Path

    @property
    def rounds(self) -> Path:
        return self.root / "rounds"

    def round(self, n: int) -> Path:
        return self.rounds / f"round-{n}"

    def round_numbers(self) -> list[int]:
        """The complete rounds saved, ascending (a `round-N.tmp` folder is an interrupted write)."""
        if not self.rounds.is_dir():
            return []
        found = (re.match(r"^round-(\d+)$", p.name) for p in self.rounds.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def log(self) -> Path:
        return self.root / "rounds.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"
