"""What a release can say about itself, read from the manifests its lineage reaches (store/manifest.py `lineage`),
the run folder (summary.json, privacy.json, the checkpoint's derived values) and the model: the facts the model
card, the datasheet and the ML-BOM are written from. Nothing here is guessed: what no file records stays None."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megalang.errors import UserError
from megalang.store.files import read_json
from megalang.store.manifest import MANIFEST, lineage, read_manifest
from megalang.store.run_dir import RunDir

# transformers config keys the card reports as the model's shape, in this order.
SHAPE_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "tie_word_embeddings")


@dataclass
class Artifact:
    """One node of the lineage: an artifact folder with its manifest, or one that was moved away (missing)."""

    path: str
    stage: str | None
    depth: int
    manifest: dict[str, Any] | None  # None when missing
    manifest_sha256: str | None  # recorded by whoever used it when missing
    changed: bool = False  # its manifest no longer has the hash its user recorded

    @property
    def missing(self) -> bool:
        return self.manifest is None

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def counts(self) -> dict[str, Any]:
        return (self.manifest or {}).get("counts", {})

    def raw_inputs(self) -> list[dict[str, Any]]:
        return [i for i in (self.manifest or {}).get("inputs", []) if i.get("kind") == "raw"]


@dataclass
class ReleaseFacts:
    name: str  # the release folder's name
    fmt: str
    quant: str | None
    origin: str  # the run or export folder exported from
    origin_kind: str  # "run" or "export"
    step: int | None
    params: int
    shape: dict[str, Any]
    architecture: str | None
    tokenizer: dict[str, Any]
    chain: list[Artifact] = field(default_factory=list)
    lineage_problem: str | None = None
    run_path: str | None = None  # the training run (None when not recorded)
    run_missing: bool = False
    run_config: dict[str, Any] | None = None
    derived: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    signed: bool = False

    def stage(self, *names: str) -> list[Artifact]:
        return [a for a in self.chain if a.stage in names and not a.missing]

    def missing(self) -> list[Artifact]:
        return [a for a in self.chain if a.missing]

    def data_kinds(self) -> list[str]:
        kinds: set[str] = set()
        for a in self.stage("data.prepare"):
            kinds.update(a.counts.get("documents_by_kind", {}))
        return sorted(kinds)

    def objective(self) -> str:
        cfg = self.run_config or {}
        if not cfg:
            return "not recorded"
        parts = []
        if (cfg.get("distill") or {}).get("teacher"):
            parts.append("distillation from " + str(cfg["distill"]["teacher"]))
        elif (cfg.get("data") or {}).get("classify"):
            parts.append("classification fine-tuning")
        elif (cfg.get("data") or {}).get("sft"):
            parts.append("supervised fine-tuning (chat)")
        elif (cfg.get("model") or {}).get("pretrained"):
            parts.append("continued pretraining (next-token prediction)")
        else:
            parts.append("pretraining from scratch (next-token prediction)")
        if (cfg.get("lora") or {}).get("rank"):
            parts.append(f"LoRA rank {cfg['lora']['rank']}")
        if (cfg.get("privacy") or {}).get("target_epsilon") is not None:
            parts.append("DP-SGD")
        return ", ".join(parts)

    def evaluation(self) -> dict[str, float]:
        """Held-out numbers the run recorded: val loss (and its perplexity), other val_* metrics, the privacy
        audit's exposure and membership-inference AUC."""
        out: dict[str, float] = {}
        for key, value in self.summary.items():
            if key.startswith("val_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out[key] = float(value)
        if "val_loss" in out and out["val_loss"] < 50:
            out["val_perplexity"] = math.exp(out["val_loss"])
        for key in ("exposure_mean", "control_exposure_mean", "mia_auc"):
            if isinstance(self.privacy.get(key), (int, float)):
                out[f"privacy_{key}"] = float(self.privacy[key])
        return out

    def epsilon(self) -> tuple[float | None, float | None]:
        """(ε, δ) of a DP run, from summary.json (the accountant's value at the end of training)."""
        eps = self.summary.get("epsilon", self.privacy.get("epsilon"))
        delta = (self.summary.get("privacy") or {}).get("delta", self.privacy.get("delta"))
        return eps, delta


def gather_facts(name: str, fmt: str, quant: str | None, model, origin: Path, origin_kind: str,
                 run_config: Any | None, step: int | None, tokenizer_json: Path | None,
                 libraries: dict[str, str]) -> ReleaseFacts:
    """The facts of one export; never raises for a damaged or moved lineage (the facts say what is missing)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.to_dict()
    facts = ReleaseFacts(
        name=name, fmt=fmt, quant=quant, origin=str(origin.resolve()), origin_kind=origin_kind, step=step,
        params=sum(p.numel() for p in model.parameters()),
        shape={k: config[k] for k in SHAPE_KEYS if k in config},
        architecture=(config.get("architectures") or [None])[0],
        tokenizer=describe_tokenizer(tokenizer_json), libraries=libraries,
    )
    facts.chain, facts.lineage_problem = walk_lineage(origin)
    find_run(facts, origin, origin_kind, run_config)
    if origin_kind == "run" and not facts.chain:  # a run without manifest: its checkpoint names its inputs
        facts.lineage_problem = (f"the run {origin} has no {MANIFEST} (it did not finish); its inputs are read from "
                                 "its checkpoint")
        for key in ("shards", "tokenizer_path"):
            extend_chain(facts, facts.derived.get(key))
    extend_chain(facts, facts.base_model)  # a base model megalang exported: its corpus is part of this model's
    return facts


def extend_chain(facts: ReleaseFacts, root: str | None) -> None:
    """Add the lineage of another artifact (one level down) to the facts, each artifact once."""
    if not root or not (Path(root) / MANIFEST).is_file():
        return
    more, problem = walk_lineage(Path(root), depth=1)
    seen = {a.path for a in facts.chain}
    facts.chain += [a for a in more if a.path not in seen]
    facts.lineage_problem = facts.lineage_problem or problem


def walk_lineage(root: Path, depth: int = 0) -> tuple[list[Artifact], str | None]:
    """The lineage of `root` with every manifest, the missing ones marked and the changed ones flagged; a
    damaged manifest ends the walk with its one-line problem instead of an exception."""
    if not (root / MANIFEST).is_file():
        return [], f"{root}: no {MANIFEST}; its inputs are not recorded"
    try:
        nodes = lineage(root)
    except UserError as e:
        return [], str(e)
    chain = []
    recorded: dict[str, str] = {}  # path -> manifest hash its user recorded
    for node in nodes:
        manifest = None if node.get("missing") else read_manifest(node["path"])
        for inp in (manifest or {}).get("inputs", []):
            if inp.get("kind") == "artifact":
                recorded.setdefault(str(Path(inp["path"]).resolve()), inp.get("manifest_sha256"))
        chain.append(Artifact(str(Path(node["path"]).resolve()), node.get("stage"), node["depth"] + depth, manifest,
                              node.get("manifest_sha256")))
    for a in chain:
        expected = recorded.get(a.path)
        if a.missing:
            a.manifest_sha256 = expected
        elif expected is not None and expected != a.manifest_sha256:
            a.changed = True
    return chain, None


def find_run(facts: ReleaseFacts, origin: Path, origin_kind: str, run_config: Any | None) -> None:
    """The training run's config, derived values, summary and privacy audit, when its folder is still there."""
    if origin_kind == "run":
        run = RunDir(origin)
    else:
        trains = [a for a in facts.chain if a.stage == "train"]
        if not trains:
            return
        facts.run_path = trains[0].path
        if trains[0].missing:
            facts.run_missing = True
            return
        run = RunDir(Path(trains[0].path))
        if facts.step is None and facts.chain[0].manifest:
            facts.step = (facts.chain[0].manifest.get("config") or {}).get("step")
    facts.run_path = str(run.root.resolve())
    if run_config is not None:
        facts.run_config = run_config.model_dump(mode="json")
    elif run.manifest.is_file():
        facts.run_config = read_manifest(run.root).get("config")
    facts.derived = checkpoint_derived(run, facts.step)
    facts.summary = read_optional(run.summary)
    facts.privacy = read_optional(run.privacy)
    if not facts.summary:
        facts.summary = last_val_metrics(run)
    facts.base_model = ((facts.run_config or {}).get("model") or {}).get("pretrained")


def checkpoint_derived(run: RunDir, step: int | None) -> dict[str, Any]:
    """What setup derived (global batch, world size, tokenizer hash) from the checkpoint the release holds."""
    from megalang.store.checkpoints import find_checkpoint, read_run_config

    try:
        return read_run_config(find_checkpoint(run, step)).get("derived") or {}
    except UserError:
        return {}


def read_optional(path: Path) -> dict[str, Any]:
    try:
        value = read_json(path) if path.is_file() else {}
    except UserError:
        return {}
    return value if isinstance(value, dict) else {}


def last_val_metrics(run: RunDir) -> dict[str, Any]:
    """A run without summary.json (killed, still training): its last logged val_* values and train loss."""
    from megalang.monitor.metrics import read_metrics

    records = read_metrics(run.metrics)
    out: dict[str, Any] = {}
    for step, record in records.items():
        out.update({k: v for k, v in record.items() if k.startswith("val_") and v is not None})
        if record.get("loss") is not None:
            out.setdefault("train_loss_first", record["loss"])
            out["train_loss_last"] = record["loss"]
        out["steps"], out["tokens_seen"] = step, record.get("tokens")
    return out


def describe_tokenizer(path: Path | None) -> dict[str, Any]:
    """Type (BPE, Unigram, …), vocabulary size with added tokens, and the special tokens of a tokenizer.json."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    model = data.get("model") or {}
    vocab = model.get("vocab") or {}
    added = data.get("added_tokens") or []
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    ids |= {t.get("id") for t in added}
    return {"type": model.get("type"), "vocab_size": len(ids), "byte_fallback": model.get("byte_fallback"),
            "special_tokens": [t.get("content") for t in added if t.get("special")]}
