"""`megalang tokenizer train`: SentencePiece BPE (byte fallback, exact whitespace) trained on prepared documents,
converted to an id-identical `tokenizer.json` (+ Hugging Face configs); and loading a tokenizer folder back.
"""

from __future__ import annotations

import io
import json
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from megalang.config import TokenizerTrainConfig
from megalang.data.documents import iter_prepared, read_prepared_manifest
from megalang.errors import UserError
from megalang.store.files import staging_dir
from megalang.store.manifest import MANIFEST, describe_input, read_manifest, write_manifest

STAGE = "tokenizer.train"
SPECIAL_TOKENS = {"unk": (0, "<unk>"), "bos": (1, "<s>"), "eos": (2, "</s>"), "pad": (3, "<pad>")}
# Lines per training sentence. Sentences keep their newlines so that BPE learns pieces such as "):\n" and "\n\n":
# on held-out stdlib modules (vocab 8192) that gives 0.287 tokens/byte against 0.306 when training on single lines.
LINES_PER_SENTENCE = 8
_PARITY_SAMPLE = 256  # training sentences re-encoded with both libraries as a self-check

# Written to tokenizer_config.json; load_hf_tokenizer passes the same values, so both load identically.
HF_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    **{f"{name}_token": token for name, (_, token) in SPECIAL_TOKENS.items()},
    "add_bos_token": False,
    "add_eos_token": False,
    # SentencePiece never reads "<s>" in text as the control token; neither must tokenizers/transformers.
    "split_special_tokens": True,
    # Decoding must give back the exact text (code!), not "cleaned up" spacing around punctuation.
    "clean_up_tokenization_spaces": False,
}


def train_tokenizer(cfg: TokenizerTrainConfig) -> dict[str, Any]:
    """Train on a sample of the prepared documents, write spm.model + tokenizer.json; return the manifest."""
    read_prepared_manifest(cfg.input)
    sentences, stats = sample_sentences(
        (row["text"] for row in iter_prepared(cfg.input, columns=("text",))),
        cfg.max_sentences, cfg.max_sentence_length, cfg.seed,
    )
    if not sentences:
        raise UserError(f"{cfg.input}: no text to train a tokenizer on; re-run `megalang data prepare` with more input")
    with staging_dir(cfg.out, cfg.overwrite) as tmp:
        train_sentencepiece(sentences, tmp, cfg)
        tokenizer = build_tokenizer_json(tmp / "spm.model")
        tokenizer.save(str(tmp / "tokenizer.json"))
        save_hf_configs(tmp)
        stats["sample_tokens_per_byte"] = check_parity(tmp, sentences[:_PARITY_SAMPLE])
        return write_manifest(
            tmp, STAGE, config=cfg.model_dump(), inputs=[describe_input(cfg.input)], counts=stats,
            vocab_size=cfg.vocab_size, **{f"{name}_id": i for name, (i, _) in SPECIAL_TOKENS.items()},
        )


def sample_sentences(texts: Iterable[str], max_sentences: int, max_bytes: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """Reservoir-sample at most `max_sentences` sentences (deterministic for a given seed and corpus order)."""
    rng = random.Random(seed)
    sample: list[str] = []
    stats = {"documents": 0, "sentences_total": 0}
    for text in texts:
        stats["documents"] += 1
        for sentence in split_sentences(text, max_bytes):
            seen = stats["sentences_total"]
            stats["sentences_total"] += 1
            if seen < max_sentences:
                sample.append(sentence)
            elif (j := rng.randrange(seen + 1)) < max_sentences:
                sample[j] = sentence
    stats["sentences_sampled"] = len(sample)
    stats["sample_bytes"] = sum(len(s.encode("utf-8")) for s in sample)
    return sample, stats


def split_sentences(text: str, max_bytes: int) -> Iterator[str]:
    """Runs of up to LINES_PER_SENTENCE lines (newlines kept), each at most `max_bytes` UTF-8 bytes.

    SentencePiece skips longer sentences, so an over-long line is cut into pieces rather than lost.
    """
    # Only "\n" ends a line: str.splitlines would also cut at \r, \f, \x1c.. and change what BPE sees.
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]] + [parts[-1]]
    chunk: list[str] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if n > max_bytes:
            yield from _flush(chunk)
            chunk, size = [], 0
            step = max(max_bytes // 4, 1)  # 4 bytes per character at most, so every slice fits
            yield from (line[i : i + step] for i in range(0, len(line), step))
            continue
        if len(chunk) == LINES_PER_SENTENCE or size + n > max_bytes:
            yield from _flush(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += n
    yield from _flush(chunk)


def _flush(chunk: list[str]) -> Iterator[str]:
    if chunk and (sentence := "".join(chunk)).strip():
        yield sentence


def train_sentencepiece(sentences: list[str], root: Path, cfg: TokenizerTrainConfig) -> None:
    """Write `root/spm.model` and `root/spm.vocab` (piece<TAB>score, SentencePiece's own format)."""
    import sentencepiece as spm

    # Through a writer, not model_prefix: SentencePiece would store that (staging) path inside the model,
    # and the same corpus would give a different spm.model in every output folder.
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            max_sentence_length=cfg.max_sentence_length,
            input_sentence_size=0,  # we sampled already; SentencePiece keeps every sentence it is given
            byte_fallback=True,
            # Exact round trip for code: no NFKC, no collapsing or trimming of spaces, no dummy prefix space.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            # Indentation runs ("▁▁▁▁", "▁▁▁▁▁▁▁▁") become single pieces.
            allow_whitespace_only_pieces=True,
            split_digits=False,
            unk_id=SPECIAL_TOKENS["unk"][0], unk_piece=SPECIAL_TOKENS["unk"][1],
            bos_id=SPECIAL_TOKENS["bos"][0], bos_piece=SPECIAL_TOKENS["bos"][1],
            eos_id=SPECIAL_TOKENS["eos"][0], eos_piece=SPECIAL_TOKENS["eos"][1],
            pad_id=SPECIAL_TOKENS["pad"][0], pad_piece=SPECIAL_TOKENS["pad"][1],
            # The learned merges depend on the thread count; one thread makes them the same on every machine.
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        if m := re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", str(e)):
            raise UserError(f"--vocab-size {m[1]} is larger than this corpus supports (SentencePiece: at most {m[2]}); "
                            f"use --vocab-size {m[2]} or less, or prepare more text") from None
        if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e)):
            raise UserError(f"--vocab-size {m[1]} is smaller than this corpus needs ({m[2]}: special and byte pieces "
                            f"plus every character kept by character_coverage); use --vocab-size {m[2]} or more") from None
        raise
    (root / "spm.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    with open(root / "spm.vocab", "w", encoding="utf-8") as f:
        f.writelines(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


def build_tokenizer_json(model_file: Path):
    """A `tokenizers.Tokenizer` that gives the same ids as the SentencePiece BPE model and decodes the same.

    BPE merges are ranked by piece score, as SentencePiece applies them; there is no pre-tokenizer because
    SentencePiece encodes the whole text as one sequence (its whitespace splitting only shapes training).
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    normal = {
        sp.id_to_piece(i): (sp.get_score(i), i)
        for i in range(sp.get_piece_size())
        if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
    }
    ranked = []
    for piece, (score, i) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, i, left, right))
    merges = [(left, right) for _, _, left, right in sorted(ranked)]
    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, unk_token=SPECIAL_TOKENS["unk"][1], fuse_unk=True, byte_fallback=True)
    )
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(tok, special=True, normalized=False) for _, tok in SPECIAL_TOKENS.values()])
    return tokenizer


def save_hf_configs(root: Path) -> None:
    specials = {f"{name}_token": tok for name, (_, tok) in SPECIAL_TOKENS.items()}
    (root / "tokenizer_config.json").write_text(json.dumps(HF_CONFIG, indent=2) + "\n", encoding="utf-8")
    (root / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n", encoding="utf-8")


def check_parity(root: Path, sentences: list[str]) -> float:
    """Encode a sample with SentencePiece and with tokenizer.json; different ids are a bug. Returns tokens/byte."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    ours = load_tokenizer(root)
    expected = sp.encode(sentences)
    got = [e.ids for e in ours.encode_batch(sentences, add_special_tokens=False)]
    for text, a, b in zip(sentences, expected, got):
        if a != b:
            raise RuntimeError(f"tokenizer.json disagrees with SentencePiece on {text[:80]!r}: {b[:20]} != {a[:20]}")
    return round(sum(map(len, expected)) / max(sum(len(s.encode("utf-8")) for s in sentences), 1), 4)


# --- loading ----------------------------------------------------------------------------------------


def read_tokenizer_manifest(root: str | Path) -> dict[str, Any]:
    return read_manifest(root, STAGE, "a tokenizer", "megalang tokenizer train")


def load_tokenizer(root: str | Path):
    """The folder's tokenizer.json as a `tokenizers.Tokenizer`, reading special-token text as plain text.

    A folder without manifest.json (tokenizer files copied into a run folder) loads too.
    """
    from tokenizers import Tokenizer

    root = Path(root)
    if (root / MANIFEST).is_file():
        read_tokenizer_manifest(root)
    path = root / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{root}: no tokenizer.json; pass the folder written by `megalang tokenizer train`")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON or an unknown model
        raise UserError(f"{path}: not a valid tokenizer.json ({e}); re-run `megalang tokenizer train` or restore "
                        "the file") from None
    # Not stored in tokenizer.json: without it a literal "</s>" in a document would become the EOS id.
    tokenizer.encode_special_tokens = True
    return tokenizer


def load_hf_tokenizer(root: str | Path):
    """The tokenizer as a transformers `PreTrainedTokenizerFast` (what AutoTokenizer gives for the folder)."""
    from transformers import PreTrainedTokenizerFast

    kwargs = {k: v for k, v in HF_CONFIG.items() if k != "tokenizer_class"}
    return PreTrainedTokenizerFast(tokenizer_object=load_tokenizer(root), **kwargs)
