"""`megalang data tokenize`: prepared documents → packed train/val token shards, EOS after every document.

In one process (encoding on all cores through the Rust tokenizer), or with executor=ray as Ray tasks that encode
slices of the corpus and write shards in parallel (data/tokenize_tasks.py); both give the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from megalang.config import TokenizeConfig
from megalang.data import curriculum as cur
from megalang.data.documents import iter_prepared, read_prepared_manifest
from megalang.data.encoding import SplitRouter, encode_documents, write_routed
from megalang.data.shards import SPLITS, token_dtype
from megalang.data.tokenizer import load_tokenizer, read_tokenizer_manifest
from megalang.errors import UserError
from megalang.store.files import sha256_file, staging_dir
from megalang.store.manifest import MANIFEST, describe_input, write_manifest

__all__ = ["STAGE", "SplitRouter", "check_splits", "tokenize"]

STAGE = "data.tokenize"
_SPECIAL_IDS = ("bos_id", "eos_id", "pad_id", "unk_id")


def tokenize(cfg: TokenizeConfig) -> dict[str, Any]:
    """Encode every prepared document, append EOS, write it to the train or val shards; return the manifest."""
    read_prepared_manifest(cfg.input)
    tok_manifest = read_tokenizer_manifest(cfg.tokenizer)
    tokenizer = load_tokenizer(cfg.tokenizer)
    vocab_size, eos = tok_manifest["vocab_size"], tok_manifest["eos_id"]
    if tokenizer.get_vocab_size() != vocab_size:
        raise UserError(f"{cfg.tokenizer}: tokenizer.json has {tokenizer.get_vocab_size()} tokens, manifest says "
                        f"{vocab_size}; re-run `megalang tokenizer train`")
    dtype = token_dtype(vocab_size)
    scorer = cur.Scorer(cfg.curriculum) if cur.is_active(cfg.curriculum) else None  # checks curriculum.scores first
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        if cfg.executor == "ray":
            from megalang.data.tokenize_tasks import tokenize_on_ray

            splits, extra = tokenize_on_ray(cfg, tmp, eos, dtype)
        else:
            router = SplitRouter(cfg.val_sources, cfg.val_fraction)
            routed = ((router.split(doc_id, source), ids, scorer(doc_id, n_chars, ids) if scorer else None)
                      for doc_id, source, n_chars, ids in
                      encode_documents(iter_prepared(cfg.input), tokenizer, eos, dtype, cfg.batch_docs))
            splits, extra = write_routed(cfg, tmp, dtype, routed)
        extra.update(cur.resolved_mixture(cfg.input))
        check_splits(splits, cfg)
        tokenizer_dir = Path(cfg.tokenizer).resolve()
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(),
            inputs=[describe_input(cfg.input), describe_input(cfg.tokenizer)],
            counts={
                "documents": sum(s["documents"] for s in splits.values()),
                "tokens": sum(s["tokens"] for s in splits.values()),
                **{f"{s}_{what}": splits[s][what] for s in SPLITS for what in ("tokens", "documents")},
            },
            dtype=dtype.name,
            vocab_size=vocab_size,
            **{k: tok_manifest[k] for k in _SPECIAL_IDS},
            tokenizer_sha256=sha256_file(tokenizer_dir / MANIFEST),
            tokenizer_path=str(tokenizer_dir),
            splits=splits,
            **extra,
        )


def check_splits(splits: dict[str, dict], cfg: TokenizeConfig) -> None:
    if splits["train"]["documents"] == 0:
        raise UserError(f"{cfg.input}: every document went to val, none to train; loosen --val-source or "
                        "lower --val-fraction, or prepare more documents")
    if cfg.val_sources and cfg.val_fraction == 0 and splits["val"]["documents"] == 0:
        raise UserError(f"--val-source {' '.join(cfg.val_sources)}: matched no document source in {cfg.input}; "
                        "check the patterns (they match the absolute source path or any tail of it)")
