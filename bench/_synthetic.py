"""Synthetic token shards for throughput benchmarks (what the tokens say does not change the speed).

Writes a placeholder tokenizer artifact and a `data.tokenize` artifact with random ids in documents of
`doc_tokens` (EOS last), exactly the layout `megalang data tokenize` produces. Imported by the bench scripts,
which run with bench/ first on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from megalang.data.shards import ShardWriter, token_dtype
from megalang.store.files import sha256_file
from megalang.store.manifest import describe_input, write_manifest


def synthetic_shards(root: Path, train_tokens: int, vocab: int, val_tokens: int = 100_000,
                     doc_tokens: int = 10_000) -> Path:
    tok = root / "tok"
    tok.mkdir(parents=True)
    (tok / "tokenizer.json").write_text("{}")
    write_manifest(tok, "tokenizer.train", {}, [], {})
    shards = root / "shards"
    shards.mkdir()
    dtype = token_dtype(vocab)
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        writer = ShardWriter(shards, split, dtype, 1 << 26)
        for _ in range(max(1, n // doc_tokens)):
            writer.add(np.append(rng.integers(3, vocab, doc_tokens - 1), 2).astype(dtype))
        splits[split] = writer.close()
    write_manifest(shards, "data.tokenize", {}, [describe_input(tok)], {}, dtype=dtype.name, vocab_size=vocab,
                   eos_id=2, bos_id=1, pad_id=0, unk_id=None, tokenizer_sha256=sha256_file(tok / "manifest.json"),
                   tokenizer_path=str(tok), splits=splits)
    return shards
