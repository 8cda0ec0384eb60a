"""The data of a classifier run (`data.classify`): labelled JSONL → RUN/classify-data → micro-batches of label-word rows.

A record `{"text": ..., "label": ...}` becomes the prompt `data.classify_template` with its text, followed by
`" " + word` for every label's verbaliser word, tokenized exactly as `megalang eval classify` scores it
(evaluate/scoring.py's `encode_pair`), so the metric a run trains for is the one `eval classify` reports.
Each example gives one row per label (context + that label's word, right-padded; the loss is taken on the
word's tokens only) and its gold label's index as `target`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang.config import RunConfig
from megalang.data.loader import PositionalLoader
from megalang.data.shards import read_shard_manifest
from megalang.errors import UserError
from megalang.evaluate.classify import parse_verbalizer
from megalang.evaluate.common import CLASSIFY, read_jsonl
from megalang.evaluate.scoring import encode_pair
from megalang.store.files import read_json, sha256_file, staging_dir
from megalang.store.manifest import MANIFEST, describe_input, write_manifest
from megalang.store.run_dir import RunDir

IGNORE = -100
SPLIT_FILES = {"train": "train.jsonl", "val": "val.jsonl"}


# --- the verbaliser, the labelled records, class weights --------------------------------------------


def verbalizer(cfg: RunConfig, records: list[dict[str, Any]]) -> dict[str, str]:
    """label → word from data.labels (a mapping, JSON file or label=word,...); unset: the data's labels, sorted."""
    spec = cfg.data.labels
    if isinstance(spec, dict):
        mapping = {str(k): str(v) for k, v in spec.items()}
        if len(mapping) < 2 or any(not k or not v.strip() for k, v in mapping.items()):
            raise UserError(f"data.labels={spec}: needs at least two labels, each with a non-empty word")
    elif spec:
        mapping = parse_verbalizer(spec)
    else:
        mapping = {label: label for label in sorted({str(r["label"]) for r in records})}
        if len(mapping) < 2:
            raise UserError(f"data.classify={cfg.data.classify}: only one label ({', '.join(mapping)}) in the data; "
                            "a classifier needs examples of at least two labels")
    words = [w.strip() for w in mapping.values()]
    if len(set(words)) < len(words):
        raise UserError(f"data.labels: two labels share a word ({mapping}); give each label its own word")
    return mapping


def read_records(path: str, field_name: str, mapping: dict[str, str] | None) -> list[dict[str, Any]]:
    """The labelled records of one file; a label outside the verbaliser names its file and line."""
    if not Path(path).is_file():
        raise UserError(f"{field_name}={path}: no such file; pass a JSONL file of {{\"text\": ..., \"label\": ...}}")
    records = read_jsonl(path, CLASSIFY)
    for r in records:
        if not isinstance(r["text"], str):
            raise UserError(f"{path}:{r['_line']}: 'text' must be a string")
        if mapping is not None and str(r["label"]) not in mapping:
            raise UserError(f"{path}:{r['_line']}: label {r['label']!r} is not in data.labels ({', '.join(mapping)}); "
                            "add it to data.labels or fix the record")
    return records


def check_classes(counts: dict[str, int], source: str) -> None:
    """Every label of the verbaliser needs training examples: an empty class cannot be learned."""
    empty = [label for label, n in counts.items() if n == 0]
    if empty:
        raise UserError(f"data.classify={source}: no examples of label(s) {', '.join(map(repr, empty))} of data.labels; "
                        "add examples or drop the label from data.labels")


def class_weights(spec: str | dict[str, float], counts: dict[str, int]) -> list[float]:
    """One weight per label, in verbaliser order: none (all 1), auto (n / (labels × count), scikit-learn's
    'balanced': each class contributes equally to the loss) or an explicit {label: weight} for every label."""
    if isinstance(spec, str) and spec in ("none", "auto"):
        n, k = sum(counts.values()), len(counts)
        return [1.0] * k if spec == "none" else [n / (k * counts[label]) for label in counts]
    given = spec if isinstance(spec, dict) else parse_weight_pairs(spec)
    unknown, missing = sorted(set(given) - set(counts)), [label for label in counts if label not in given]
    if unknown or missing:
        problem = f"unknown label(s) {', '.join(unknown)}" if unknown else f"no weight for {', '.join(missing)}"
        raise UserError(f"data.class_weights={spec}: {problem}; give none, auto or a weight for each of "
                        f"{', '.join(counts)}")
    weights = [float(given[label]) for label in counts]
    if any(not w > 0 for w in weights):
        raise UserError(f"data.class_weights={spec}: weights must be positive numbers")
    return weights


def parse_weight_pairs(spec: str) -> dict[str, float]:
    out = {}
    for part in spec.split(","):
        label, sep, value = part.partition("=")
        try:
            out[label.strip()] = float(value) if sep else float("nan")
        except ValueError:
            out[label.strip()] = float("nan")
        if not sep or out[label.strip()] != out[label.strip()]:
            raise UserError(f"data.class_weights={spec}: expected none, auto or label=weight,... (e.g. malicious=3,benign=1)")
    return out


# --- tokenizing into RUN/classify-data ----------------------------------------------------------------


def prepare_classify_data(cfg: RunConfig) -> tuple[str, dict[str, Any]]:
    """(RUN/classify-data, its manifest): data.classify (and data.classify_val) checked, then tokenized with
    model.pretrained's tokenizer once per input content and settings (a resumed run reuses the folder)."""
    from megalang.data.sft import load_model_tokenizer

    check_settings(cfg)
    train = read_records(cfg.data.classify, "data.classify", None)
    mapping = verbalizer(cfg, train)
    train = read_records(cfg.data.classify, "data.classify", mapping)
    val = read_records(cfg.data.classify_val, "data.classify_val", mapping) if cfg.data.classify_val else []
    counts = {label: 0 for label in mapping} | Counter(str(r["label"]) for r in train)
    check_classes(counts, cfg.data.classify)
    class_weights(cfg.data.class_weights, counts)  # a bad spec stops here, before the run folder is touched
    out = RunDir(Path(cfg.run.dir)).classify_data
    settings = {"model": cfg.model.pretrained, "labels": mapping, "template": cfg.data.classify_template}
    inputs = [describe_input(f) for f in (cfg.data.classify, cfg.data.classify_val) if f]
    if (out / MANIFEST).is_file():
        done = read_json(out / MANIFEST, "classifier data manifest")
        if done["config"] == settings and [i["sha256"] for i in done["inputs"]] == [i["sha256"] for i in inputs]:
            return str(out), read_shard_manifest(out)
    tokenizer = load_model_tokenizer(cfg.model.pretrained)
    with staging_dir(out, overwrite=True) as tmp:
        for split, records in (("train", train), ("val", val)):
            lines = [json.dumps(tokenize_record(tokenizer, r, mapping, cfg.data.classify_template)) for r in records]
            (tmp / SPLIT_FILES[split]).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        from megalang.data.sft import TOKENIZER_DIR, save_tokenizer

        tok_dir = save_tokenizer(tokenizer, tmp / TOKENIZER_DIR, cfg.model.pretrained)
        write_manifest(
            tmp, "data.tokenize", config=settings, inputs=inputs,
            counts={"train_documents": len(train), "val_documents": len(val)},
            format="classify", labels=list(mapping), words=list(mapping.values()),
            train_counts=counts, val_counts=dict(Counter(str(r["label"]) for r in val)),
            vocab_size=len(tokenizer), bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id, unk_id=tokenizer.unk_token_id,
            tokenizer_sha256=sha256_file(tok_dir / MANIFEST), tokenizer_path=str(out.resolve() / TOKENIZER_DIR),
            splits={split: {"files": [name], "documents": len(train if split == "train" else val)}
                    for split, name in SPLIT_FILES.items()},
        )
    return str(out), read_shard_manifest(out)


def check_settings(cfg: RunConfig) -> None:
    """Combinations a classifier run cannot honour, named before anything is read."""
    d = cfg.data
    if d.sft or d.shards:
        raise UserError("data.classify trains on labelled records; leave data.sft and data.shards unset")
    if not cfg.model.pretrained:
        raise UserError("data.classify needs model.pretrained=PATH (a Hugging Face folder or .gguf; a megalang run: "
                        "`megalang export --run RUN --out FOLDER --merge` first)")
    if cfg.loss.objective != "ce":
        raise UserError(f"data.classify has its own loss (label words); loss.objective={cfg.loss.objective} cannot combine with it")
    if cfg.privacy.target_epsilon is not None:
        raise UserError("data.classify with privacy.target_epsilon is not supported yet; train the classifier without DP")
    if "{text}" not in d.classify_template:
        raise UserError(f"data.classify_template={d.classify_template!r}: must contain {{text}}")


def tokenize_record(tokenizer, record: dict[str, Any], mapping: dict[str, str], template: str) -> dict[str, Any]:
    """{ctx, conts, label}: the prompt's ids, each label word's ids after it (as eval classify encodes the pair)."""
    prompt = template.replace("{text}", record["text"])
    pairs = [encode_pair(tokenizer, prompt, " " + word) for word in mapping.values()]
    if any(not cont for _ctx, cont in pairs):
        raise UserError("data.labels: a label word encodes to zero tokens; every word must be non-empty text")
    return {"ctx": pairs[0][0], "conts": [cont for _ctx, cont in pairs], "label": list(mapping).index(str(record["label"])),
            "line": record["_line"]}


def read_examples(root: str | Path, split: str) -> list[dict[str, Any]]:
    path = Path(root) / SPLIT_FILES[split]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# --- rows for training and validation ---------------------------------------------------------------


def collate(examples: list[dict[str, Any]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """input_ids and labels [B·K, L] (row b·K+k: example b followed by label k's word, the loss on the word's
    tokens only), target [B] (the gold label). Rows are right-padded to the longest, so with causal attention
    the padding is never seen by a scored token. A context too long for seq_len loses its start, as eval
    classify left-truncates."""
    rows = []
    for ex in examples:
        for cont in ex["conts"]:
            ctx = ex["ctx"][max(0, len(ex["ctx"]) + len(cont) - (seq_len + 1)):]
            ids = ctx + cont
            rows.append((ids[:-1], [IGNORE] * (len(ctx) - 1) + cont))
    width = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
    for i, (ids, targets) in enumerate(rows):
        input_ids[i, : len(ids)] = ids
        labels[i, : len(targets)] = targets
    target = torch.tensor([ex["label"] for ex in examples], dtype=torch.int64)
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels), "target": target}


def pad_id_of(manifest: dict[str, Any]) -> int:
    return next(v for v in (manifest.get("pad_id"), manifest.get("eos_id"), 0) if v is not None)


class ClassifyLoader(PositionalLoader):
    """Micro-batches of labelled examples (see `collate`), shuffled per epoch; the `PositionalLoader` contract
    (the example at global position g is a pure function of seed, epoch and g) makes a resume exact."""

    source, unit = "data.classify", "examples"

    def __init__(self, root, manifest, seq_len: int, micro_batch: int, seed: int, rank: int = 0, world: int = 1):
        self.seq_len, self.micro_batch, self.seed, self.rank, self.world = seq_len, micro_batch, seed, rank, world
        self.examples = read_examples(root, "train")
        self.pad_id = pad_id_of(manifest)
        self.num_samples, self.consumed = len(self.examples), 0
        self._order: tuple[int, np.ndarray | None] = (-1, None)

    def example_at(self, position: int) -> dict[str, Any]:
        epoch, offset = divmod(position, self.num_samples)
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, 19, epoch]).permutation(self.num_samples))
        return self.examples[int(self._order[1][offset])]

    def batch_at(self, consumed: int) -> dict[str, torch.Tensor]:
        first = consumed + self.rank * self.micro_batch
        return collate([self.example_at(p) for p in range(first, first + self.micro_batch)], self.seq_len, self.pad_id)


@dataclass
class ClassifyVal:
    """The held-out labelled examples, in file order, batched exactly like training examples."""

    examples: list[dict[str, Any]]
    labels: list[str]
    seq_len: int
    micro_batch: int
    pad_id: int

    def batches(self, limit: int):
        for start in range(0, min(len(self.examples), limit * self.micro_batch), self.micro_batch):
            yield collate(self.examples[start: start + self.micro_batch], self.seq_len, self.pad_id)


def open_classify_val(cfg: RunConfig, shards: str, manifest: dict[str, Any]) -> ClassifyVal | None:
    examples = read_examples(shards, "val")
    if not examples:
        return None
    return ClassifyVal(examples, manifest["labels"], cfg.train.seq_len, cfg.train.micro_batch_size, pad_id_of(manifest))
