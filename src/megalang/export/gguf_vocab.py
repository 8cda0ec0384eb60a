"""The tokenizer inside a GGUF file: llama.cpp's "llama" vocabulary (SentencePiece pieces, scores and types; what
`megalang tokenizer train` makes) or its "gpt2" one (byte-level BPE tokens and merges, e.g. SmolLM2's), plus the
special tokens and the chat template (gguf.SpecialVocab)."""

from __future__ import annotations

import json
from pathlib import Path

from megalang.errors import UserError


def add_vocab(writer, folder: Path, config) -> str:
    """Add the vocabulary in `folder` (Hugging Face file names) to `writer`; returns the llama.cpp tokenizer model."""
    import gguf

    if (folder / "tokenizer.model").is_file():
        kind, merges = "llama", False
        tokens, scores, types = sentencepiece_tokens(folder, config.vocab_size)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_add_space_prefix(_spm_adds_prefix(folder / "tokenizer.model"))
        writer.add_token_scores(scores)
    else:
        kind, merges = "gpt2", True
        tokens, types, pre = bpe_tokens(folder, config.vocab_size)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=merges, n_vocab=len(tokens))
    # What the Hugging Face tokenizer does by default: megalang's and SmolLM2's add neither BOS nor EOS, and
    # llama.cpp would otherwise add BOS for a "llama" vocabulary.
    special.add_special_token.setdefault("bos", False)
    special.add_special_token.setdefault("eos", False)
    special.add_to_gguf(writer, quiet=True)
    return kind


def sentencepiece_tokens(folder: Path, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces, scores and token types of tokenizer.model (gguf.SentencePieceVocab), padded to the model's rows."""
    import gguf
    from gguf.vocab import SentencePieceVocab

    vocab = SentencePieceVocab(folder)
    tokens, scores, types = [], [], []
    for text, score, toktype in vocab.all_tokens():
        tokens.append(text)
        scores.append(score)
        types.append(int(toktype))
    _check_size(len(tokens), vocab_size)
    for i in range(len(tokens), vocab_size):  # embedding rows no piece uses
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    return tokens, scores, types


def _spm_adds_prefix(model_file: Path) -> bool:
    """Whether SentencePiece puts "▁" before the text (megalang's tokenizers do not; llama.cpp's default does).
    Asked of the model's behaviour rather than read from its normalizer spec: sentencepiece 0.2.3's generated
    sentencepiece_model_pb2 needs protobuf ≥ 7 at run time, which the `federated` extra (Flower: protobuf < 7)
    does not allow."""
    import sentencepiece as spm

    pieces = spm.SentencePieceProcessor(model_file=str(model_file)).encode("x", out_type=str)
    return bool(pieces) and pieces[0].startswith("\u2581")


def bpe_tokens(folder: Path, vocab_size: int) -> tuple[list[str], list[int], str]:
    """Tokens and types of a byte-level BPE tokenizer.json, and llama.cpp's name for its pre-tokenizer. Added tokens
    marked special become CONTROL (parsed as one token in chat templates), other added ones USER_DEFINED."""
    import gguf

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{folder}: neither tokenizer.model (SentencePiece) nor tokenizer.json; re-export the run")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise UserError(f"{path}: a {model.get('type')} tokenizer without a SentencePiece model; the GGUF writer takes "
                        "byte-level BPE (GPT-2 style) or SentencePiece tokenizers")
    pre = pre_tokenizer_name(data.get("pre_tokenizer"), path)
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    _check_size(max(by_id) + 1, vocab_size)
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, [int(t) for t in types], pre


def pre_tokenizer_name(pre: dict | None, path: Path) -> str:
    """llama.cpp's name for the pre-tokenizer: GPT-2's regex ("gpt-2"), or single digits first and then GPT-2's
    regex ("smollm", as SmolLM/SmolLM2's hub tokenizer). llama.cpp recognises pre-tokenizers by name, so one it has
    no name for would tokenise differently there; it is refused."""
    steps = (pre or {}).get("pretokenizers", [pre]) if (pre or {}).get("type") == "Sequence" else [pre]
    kinds = [(s or {}).get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level and byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space", False):
        if len(steps) == 1:
            return "gpt-2"
        if len(steps) == 2 and kinds[0] == "Digits" and steps[0].get("individual_digits"):
            return "smollm"
    raise UserError(f"{path}: pre-tokenizer {json.dumps(pre)[:120]} has no llama.cpp equivalent the GGUF writer "
                    "knows (GPT-2 byte-level, or single digits + byte-level as SmolLM); export with --format hf")


def _check_size(n_tokens: int, vocab_size: int) -> None:
    if n_tokens > vocab_size:
        raise UserError(f"the tokenizer has {n_tokens} tokens but the model only {vocab_size} embedding rows; "
                        "the run's tokenizer does not belong to this model")
