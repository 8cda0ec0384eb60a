"""Recipe `evals:` sets are scored during training and land in metrics.jsonl as eval/NAME/METRIC."""

import json

import numpy as np
import pytest
from evalsets import write_jsonl

from megalang.config import RunConfig
from megalang.data.shards import ShardWriter
from megalang.errors import UserError
from megalang.store.files import sha256_file
from megalang.store.manifest import describe_input, write_manifest

VOCAB = 64


def make_word_tokenizer(root):
    """A real (WordLevel) tokenizer: "w3".."w63" are ids 3..63, so eval text can address every id."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    root.mkdir(parents=True)
    tok.save(str(root / "tokenizer.json"))
    write_manifest(root, "tokenizer.train", {}, [], {"vocab_size": VOCAB})
    return root


def make_counting_shards(root, tokenizer):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    splits = {}
    for split, n in (("train", 200), ("val", 20)):
        w = ShardWriter(root, split, np.dtype(np.uint16), tokens_per_shard=4096)
        for _ in range(n):
            start, length = rng.integers(0, 55), rng.integers(10, 40)
            w.add(np.append((start + np.arange(length)) % 55 + 4, 2))
        splits[split] = w.close()
    write_manifest(
        root, "data.tokenize", {}, [describe_input(tokenizer)], {"tokens": sum(s["tokens"] for s in splits.values())},
        dtype="uint16", vocab_size=VOCAB, eos_id=2, bos_id=1, pad_id=None, unk_id=0,
        tokenizer_sha256=sha256_file(tokenizer / "manifest.json"), tokenizer_path=str(tokenizer.resolve()), splits=splits,
    )
    return root


@pytest.fixture(scope="module")
def evalsets(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalsets")
    rows = [{"question": f"w{s} w{s + 1} w{s + 2}", "choices": [f"w{s + 3}", f"w{s + 9}"], "answer": 0} for s in range(10, 30)]
    texts = [{"text": " ".join(f"w{s + i}" for i in range(12))} for s in range(5, 15)]
    return write_jsonl(d / "count.jsonl", rows), write_jsonl(d / "docs.jsonl", texts)


def test_evals_are_logged_every_n_steps_and_at_the_end(tmp_path, evalsets):
    from megalang.train.trainer import train

    tok = make_word_tokenizer(tmp_path / "tok")
    shards = make_counting_shards(tmp_path / "shards", tok)
    choice_set, docs = evalsets
    cfg = RunConfig.model_validate({
        "model": {"preset": "debug"},
        "data": {"shards": str(shards)},
        "train": {"max_steps": 5, "seq_len": 32, "micro_batch_size": 4, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1,
                  "log_every": 10, "eval_batches": 1, "progress": False, "device": "cpu"},
        "checkpoint": {"every": 0},
        "metrics": {"system": False, "report": False},
        "run": {"dir": str(tmp_path / "run")},
        "evals": [
            {"kind": "choice", "data": str(choice_set), "every": 2},
            {"kind": "perplexity", "data": str(docs), "name": "docs"},
        ],
    })
    train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    with_choice = [r for r in lines if "eval/count/acc" in r]
    assert [r["step"] for r in with_choice] == [2, 4, 5]
    assert all(0 <= r["eval/count/acc"] <= 1 and 0 <= r["eval/count/acc_norm"] <= 1 for r in with_choice)
    with_docs = [r for r in lines if "eval/docs/word_perplexity" in r]
    assert [r["step"] for r in with_docs] == [5]
    assert 1 < with_docs[0]["eval/docs/token_perplexity"] < VOCAB * 4


def test_missing_eval_file_is_a_config_error(tmp_path):
    from megalang.config import build_config

    with pytest.raises(UserError, match=r"evals.0: .*no such file"):
        build_config(RunConfig, {"evals": [{"kind": "choice", "data": str(tmp_path / "nope.jsonl")}]})
