"""Supervised fine-tuning data: chat / prompt-completion JSONL → token shards with a loss mask → packed rows.

An SFT shard folder is a plain shard folder (`data.tokenize`, `format: sft`) whose every document is one
example, plus `train-NNNNN.mask` (uint8, one byte per token: 1 = an assistant token the loss is taken on)
and `tokenizer/` (the model's own tokenizer, so the run can export it). Rows for training are packed
examples whose position ids restart at each example, which transformers turns into a block-diagonal
causal mask (no attention across examples).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from megalang.config import SftTokenizeConfig
from megalang.data.loader import PositionalLoader
from megalang.data.shards import ShardWriter, open_split, token_dtype
from megalang.errors import UserError
from megalang.jsonl import parse_object
from megalang.store.files import sha256_file, staging_dir
from megalang.store.manifest import MANIFEST, describe_input, write_manifest

ROLES = ("system", "user", "assistant")
MASK_SUFFIX = ".mask"
TOKENIZER_DIR = "tokenizer"
IGNORE = -100  # the label F.cross_entropy skips


# --- reading ----------------------------------------------------------------------------------------


def read_sft_jsonl(path: str | Path) -> Iterator[list[dict[str, str]]]:
    """Each line as a conversation (a list of {role, content}); every problem names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.sft={path}: no such file; pass a JSONL file of chats or prompt/completion pairs")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield parse_example(line, f"{path}:{lineno}")


def parse_example(line: str, where: str) -> list[dict[str, str]]:
    obj = parse_object(line, where, "a JSON object with 'messages' or 'prompt'/'completion'")
    if "messages" in obj:
        return check_messages(obj["messages"], where)
    if "prompt" in obj and "completion" in obj:
        if not isinstance(obj["prompt"], str) or not isinstance(obj["completion"], str):
            raise UserError(f"{where}: 'prompt' and 'completion' must be strings")
        return [{"role": "user", "content": obj["prompt"]}, {"role": "assistant", "content": obj["completion"]}]
    raise UserError(f"{where}: expected 'messages' (a chat) or 'prompt' and 'completion'; got keys {sorted(obj)}")


def check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise UserError(f"{where}: messages[{i}] must be an object with a string 'content'")
        if m.get("role") not in ROLES:
            raise UserError(f"{where}: messages[{i}] has unknown role {m.get('role')!r}; use one of {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: no assistant turn, so nothing to train on; add an assistant message or drop the line")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


# --- rendering and the assistant mask ---------------------------------------------------------------


def render_example(tokenizer, messages: list[dict[str, str]], where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(token ids, mask) of one conversation through the tokenizer's chat template; mask 1 on assistant tokens.

    Assistant spans are found by rendering growing prefixes of the conversation, so any template that renders
    a prefix as a prefix works (no template-specific markers). A span ends at the end of the turn's closing
    token (e.g. <|im_end|>): the model must learn to stop.
    """
    if not getattr(tokenizer, "chat_template", None):
        return render_plain(tokenizer, messages)
    full = _render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], generation_prompt=True)) if i else 0
        end_text = _render(tokenizer, messages[: i + 1])
        if not full.startswith(end_text) or start > len(end_text):
            raise UserError(f"{where}: the model's chat template does not render a conversation's prefix as its "
                            "prefix, so assistant turns cannot be located; use a model with a standard template")
        spans.append((start, len(end_text.rstrip())))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = np.array([any(s <= a < e for s, e in spans) for a, _b in enc["offset_mapping"]], dtype=np.uint8)
    return np.asarray(enc["input_ids"], dtype=np.int64), mask


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def render_plain(tokenizer, messages: list[dict[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """A tokenizer without a chat template: turns joined by newlines, EOS after each assistant turn."""
    ids: list[int] = []
    mask: list[int] = []
    eos = tokenizer.eos_token_id
    for m in messages:
        piece = tokenizer(m["content"] + ("" if m["role"] == "assistant" else "\n"), add_special_tokens=False)["input_ids"]
        is_answer = m["role"] == "assistant"
        piece = piece + ([eos] if is_answer and eos is not None else [])
        ids += piece
        mask += [int(is_answer)] * len(piece)
    return np.asarray(ids, dtype=np.int64), np.asarray(mask, dtype=np.uint8)


# --- writing shards ---------------------------------------------------------------------------------


def load_model_tokenizer(model_path: str | Path):
    """The tokenizer (with its chat template) of a Hugging Face folder or a .gguf file."""
    from transformers import AutoTokenizer

    from megalang.model.build import pretrained_source

    path = Path(model_path)
    folder, extra = pretrained_source(path)
    try:
        return AutoTokenizer.from_pretrained(folder, **extra)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: cannot load its tokenizer ({str(e).splitlines()[0]})") from None


def tokenize_sft(cfg: SftTokenizeConfig, tokenizer=None) -> dict[str, Any]:
    """Render and tokenize every example into `train-*` (and `val-*`) shards plus masks; copy the tokenizer in;
    manifest last. The val split is `cfg.val_input`, else the `cfg.val_fraction` of `cfg.input` a hash picks."""
    tokenizer = tokenizer if tokenizer is not None else load_model_tokenizer(cfg.model)
    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    out = Path(cfg.out)
    with staging_dir(out, cfg.overwrite) as tmp:
        writers = {name: SplitWriter(tmp, name, dtype) for name in ("train", "val")}
        for where, messages, split in route_examples(cfg):
            writers[split].add(*render_example(tokenizer, messages, where))
        train_only = 0  # after every input example: the last `train_only_documents` of train (eval privacy skips them)
        for n, messages in enumerate(read_sft_jsonl(cfg.train_only) if cfg.train_only else (), 1):
            writers["train"].add(*render_example(tokenizer, messages, f"{cfg.train_only}:{n}"))
            train_only += 1
        splits = {name: w.close() for name, w in writers.items()}
        if not splits["train"]["documents"]:
            raise UserError(f"{cfg.input}: no training examples (the file is empty, or val_fraction took them all)")
        tok_dir = save_tokenizer(tokenizer, tmp / TOKENIZER_DIR, cfg.model)
        train, val = splits["train"], splits["val"]
        return write_manifest(
            tmp, "data.tokenize", config=cfg.model_dump(),
            inputs=[describe_input(f) for f in (cfg.input, cfg.val_input, cfg.train_only) if f],
            counts={"examples": train["documents"], "tokens": train["tokens"],
                    "assistant_tokens": writers["train"].assistant_tokens,
                    "train_documents": train["documents"], "train_tokens": train["tokens"],
                    "val_documents": val["documents"], "val_tokens": val["tokens"],
                    "val_assistant_tokens": writers["val"].assistant_tokens, "train_only_documents": train_only},
            format="sft", dtype=dtype.name, vocab_size=vocab_size,
            bos_id=tokenizer.bos_token_id, eos_id=tokenizer.eos_token_id,
            pad_id=tokenizer.pad_token_id, unk_id=tokenizer.unk_token_id,
            tokenizer_sha256=sha256_file(tok_dir / MANIFEST),
            tokenizer_path=str(out.resolve() / TOKENIZER_DIR),
            splits=splits,
        )


def route_examples(cfg: SftTokenizeConfig) -> Iterator[tuple[str, list[dict[str, str]], str]]:
    """(where, messages, split) for every example. A hash of the conversation picks the val share, so the split
    does not depend on line order and duplicates land on the same side; a tiny file still gets one val example."""
    from megalang.data.tokenize import SplitRouter

    router = SplitRouter([], cfg.val_fraction)
    last_train, any_val = None, False
    for n, messages in enumerate(read_sft_jsonl(cfg.input), 1):
        where = f"{cfg.input}:{n}"
        if cfg.val_fraction and not cfg.val_input and router.hash_is_val(json.dumps(messages, sort_keys=True)):
            any_val = True
            yield where, messages, "val"
        else:
            if last_train is not None:
                yield *last_train, "train"
            last_train = (where, messages)
    if last_train is not None:  # held back one step: it becomes val if the hash chose none
        yield *last_train, "val" if cfg.val_fraction and not cfg.val_input and not any_val else "train"
    if cfg.val_input:
        for n, messages in enumerate(read_sft_jsonl(cfg.val_input), 1):
            yield f"{cfg.val_input}:{n}", messages, "val"


class SplitWriter:
    """One split's token shard plus its loss-mask file (one byte per token, in the same order)."""

    def __init__(self, root: Path, name: str, dtype):
        self.writer = ShardWriter(root, name, dtype, tokens_per_shard=1 << 62)  # one shard: SFT sets are small
        self.root, self.masks, self.assistant_tokens = root, [], 0

    def add(self, ids: np.ndarray, mask: np.ndarray) -> None:
        self.writer.add(ids)
        self.masks.append(mask)
        self.assistant_tokens += int(mask.sum())

    def close(self) -> dict[str, Any]:
        split = self.writer.close()
        if split["documents"]:
            mask_name = split["files"][0].replace(".bin", MASK_SUFFIX)
            np.concatenate(self.masks).tofile(self.root / mask_name)
            split["files"].append(mask_name)
        return split


def save_tokenizer(tokenizer, dest: Path, source: str | Path) -> Path:
    """The model's tokenizer as a Hugging Face tokenizer folder with its own manifest (a run copies it in)."""
    dest.mkdir(parents=True)
    tokenizer.save_pretrained(dest)
    write_manifest(dest, "tokenizer.pretrained", config={"model": str(source)}, inputs=[],
                   counts={"vocab_size": len(tokenizer)})
    return dest


# --- rows for training ------------------------------------------------------------------------------


def read_sft_examples(root: str | Path, manifest: dict[str, Any],
                      split_name: str = "train") -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, mask) per example of one split (train or val) of an SFT shard folder."""
    root = Path(root)
    split = open_split(root, split_name, manifest)
    masks = []
    for name in manifest["splits"][split_name]["files"]:
        if name.endswith(MASK_SUFFIX):
            masks.append(np.fromfile(root / name, dtype=np.uint8))
    mask = np.concatenate(masks) if masks else np.zeros(0, np.uint8)
    if len(mask) != len(split):
        raise UserError(f"{root}: the loss-mask files hold {len(mask)} entries for {len(split)} tokens; "
                        "re-run `megalang data tokenize --format sft`")
    examples, offset = [], 0
    for ids in split.documents():
        examples.append((ids, mask[offset: offset + len(ids)]))
        offset += len(ids)
    return examples


@dataclass
class Row:
    """One training row: examples laid end to end (input tokens, target tokens, target mask)."""

    pieces: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    length: int = 0


@dataclass
class SftStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    rows: int = 0
    loss_tokens: int = 0


def build_rows(examples, seq_len: int, packing: bool, overlong: str, seed: int) -> tuple[list[Row], SftStats]:
    """Pack (or pad) examples into rows of seq_len inputs; overlong ones are truncated or dropped, and counted.

    An example of n tokens gives n−1 (input, next-token) pairs. The order is fixed by `seed`, so packing is
    the same on every rank and on resume; the loader then shuffles whole rows per epoch.
    """
    stats = SftStats(examples=len(examples))
    rows: list[Row] = []
    for i in np.random.default_rng([seed, 6]).permutation(len(examples)):
        ids, mask = examples[i]
        if len(ids) > seq_len + 1:
            if overlong == "drop":
                stats.dropped += 1
                continue
            ids, mask = ids[: seq_len + 1], mask[: seq_len + 1]
            stats.truncated += 1
        inputs, targets, target_mask = ids[:-1], ids[1:], mask[1:]
        if len(inputs) == 0 or not target_mask.any():
            stats.dropped += 1  # nothing left to learn from (no assistant token within the window)
            continue
        if not packing or not rows or rows[-1].length + len(inputs) > seq_len:
            rows.append(Row())
        rows[-1].pieces.append((inputs, targets, target_mask))
        rows[-1].length += len(inputs)
        stats.loss_tokens += int(target_mask.sum())
    stats.rows = len(rows)
    return rows, stats


def collate_row(row: Row, seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, labels, position_ids) of one row, padded to seq_len.

    Position ids restart at 0 for every example and for the padding tail, which is what makes transformers
    build a block-diagonal mask; padding is never a target.
    """
    input_ids = np.full(seq_len, pad_id, dtype=np.int64)
    labels = np.full(seq_len, IGNORE, dtype=np.int64)
    positions = np.zeros(seq_len, dtype=np.int64)
    at = 0
    for inputs, targets, mask in row.pieces:
        n = len(inputs)
        input_ids[at: at + n] = inputs
        labels[at: at + n] = np.where(mask.astype(bool), targets, IGNORE)
        positions[at: at + n] = np.arange(n)
        at += n
    positions[at:] = np.arange(seq_len - at)
    return input_ids, labels, positions


class SftLoader(PositionalLoader):
    """Micro-batches of {input_ids, labels, position_ids} over packed SFT rows, for one data-parallel rank.

    Same contract as `SampleLoader`: the row at global position g is a pure function of (seed, epoch, g), so a
    resume needs only `consumed`, and ranks take consecutive blocks of micro_batch rows.
    """

    source, unit = "SFT data", "rows"

    def __init__(self, root, manifest, seq_len: int, micro_batch: int, seed: int, rank: int = 0, world: int = 1,
                 packing: bool = True, overlong: str = "truncate"):
        self.seq_len, self.micro_batch, self.seed, self.rank, self.world = seq_len, micro_batch, seed, rank, world
        self.rows, self.stats = build_rows(read_sft_examples(root, manifest), seq_len, packing, overlong, seed)
        if not self.rows:
            raise UserError(f"{root}: no SFT example has an assistant token within train.seq_len={seq_len} "
                            f"({self.stats.dropped} dropped, {self.stats.truncated} truncated); raise train.seq_len")
        self.pad_id = next(v for v in (manifest.get("pad_id"), manifest.get("eos_id"), 0) if v is not None)
        self.num_samples = len(self.rows)
        self.consumed = 0
        self._order: tuple[int, np.ndarray | None] = (-1, None)  # (epoch, row permutation), cached

    def row_at(self, position: int) -> Row:
        epoch, offset = divmod(position, self.num_samples)
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.num_samples))
        return self.rows[int(self._order[1][offset])]

    def batch_at(self, consumed: int) -> dict[str, torch.Tensor]:
        first = consumed + self.rank * self.micro_batch
        cols = zip(*(collate_row(self.row_at(p), self.seq_len, self.pad_id) for p in range(first, first + self.micro_batch)))
        input_ids, labels, positions = (torch.from_numpy(np.stack(c)) for c in cols)
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions}

