"""data/sft.py: chat rendering with the model's template, the assistant-only loss mask (token by token),
packing without attention across examples, overlong examples, bad input, and `data tokenize --format sft`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_jsonl

from megalang.config import SftTokenizeConfig
from megalang.data.sft import IGNORE, Row, build_rows, collate_row, parse_example, read_sft_examples, render_example
from megalang.data.sft import tokenize_sft
from megalang.errors import UserError

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_assistant_mask_token_by_token(smol_tokenizer):
    ids, mask = render_example(smol_tokenizer, CHAT)
    pieces = [smol_tokenizer.decode([int(i)]) for i in ids]
    masked = [p for p, m in zip(pieces, mask) if m]
    # Exactly the two assistant answers, each with its closing <|im_end|> (the model must learn to stop);
    # never the role headers, the system/user turns or the newline after <|im_end|>.
    assert masked == ["Hello", "!", "<|im_end|>", "4", "<|im_end|>"]
    assert smol_tokenizer.decode(ids.tolist()) == smol_tokenizer.apply_chat_template(CHAT, tokenize=False)
    first = pieces.index("Hello")
    assert pieces[first - 3: first] == ["ass", "istant", "\n"] and mask[first - 1] == 0


def test_prompt_completion_is_a_user_assistant_pair(smol_tokenizer):
    messages = parse_example(json.dumps({"prompt": "Say hi", "completion": "hi"}), "x:1")
    assert messages == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}]
    ids, mask = render_example(smol_tokenizer, messages)
    assert smol_tokenizer.decode(ids[mask.astype(bool)].tolist()) == "hi<|im_end|>"


@pytest.mark.parametrize("line, message", [
    ('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}', "unknown role 'robot'"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
    ('{"text": "x"}', "expected 'messages'"),
    ('{"messages": [', "not valid JSON"),
])
def test_bad_examples_name_the_line(line, message):
    with pytest.raises(UserError, match=f"chat.jsonl:7: .*{message}"):
        parse_example(line, "chat.jsonl:7")


def example(n: int, answer_from: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(10, 10 + n, dtype=np.int64)
    mask = (np.arange(n) >= answer_from).astype(np.uint8)
    return ids, mask


def test_rows_pack_examples_and_labels_follow_the_mask():
    rows, stats = build_rows([example(5, 3), example(4, 2)], seq_len=16, packing=True, overlong="truncate", seed=0)
    assert len(rows) == 1 and stats.rows == 1 and stats.loss_tokens == 2 + 2
    input_ids, labels, positions = collate_row(rows[0], 16, pad_id=0)
    lengths = [len(p[0]) for p in rows[0].pieces]
    assert sorted(lengths) == [3, 4]
    # Position ids restart for each example and for the padding tail.
    expected_pos = np.concatenate([np.arange(n) for n in lengths] + [np.arange(16 - sum(lengths))])
    assert positions.tolist() == expected_pos.tolist()
    assert (labels[sum(lengths):] == IGNORE).all() and (input_ids[sum(lengths):] == 0).all()
    # Within an example, label j is token j+1 where that token is an assistant token.
    first_inputs, first_targets, first_mask = rows[0].pieces[0]
    n = len(first_inputs)
    assert labels[:n].tolist() == np.where(first_mask.astype(bool), first_targets, IGNORE).tolist()


def test_no_packing_gives_one_example_per_row():
    rows, _ = build_rows([example(5, 3), example(4, 2)], seq_len=16, packing=False, overlong="truncate", seed=0)
    assert [len(r.pieces) for r in rows] == [1, 1]


def test_overlong_examples_are_truncated_or_dropped_and_counted():
    examples = [example(30, 10), example(30, 25), example(6, 2)]
    _, stats = build_rows(examples, seq_len=16, packing=True, overlong="truncate", seed=0)
    # The second one's answer starts past the window: truncating leaves no target, so it is dropped.
    assert (stats.truncated, stats.dropped, stats.examples) == (2, 1, 3)
    _, stats = build_rows(examples, seq_len=16, packing=True, overlong="drop", seed=0)
    assert (stats.truncated, stats.dropped) == (0, 2)


def test_packed_examples_do_not_attend_to_each_other(tiny_pretrained):
    """The logits of example B packed after example A equal those of B alone (block-diagonal mask)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_pretrained, dtype=torch.float32).eval()
    a, b = example(7, 3), (np.arange(40, 49, dtype=np.int64), np.ones(9, np.uint8))
    row = Row()
    for ids, mask in (a, b):
        row.pieces.append((ids[:-1], ids[1:], mask[1:]))
    input_ids, _labels, positions = collate_row(row, 20, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([input_ids]), position_ids=torch.tensor([positions]), use_cache=False).logits
        alone = model(input_ids=torch.tensor([b[0][:-1]]), use_cache=False).logits
        mixed = model(input_ids=torch.tensor([input_ids]), use_cache=False).logits  # no reset: B sees A
    torch.testing.assert_close(packed[0, 6:14], alone[0], rtol=1e-4, atol=1e-4)
    assert (mixed[0, 6:14] - alone[0]).abs().max() > 1e-3


def test_tokenize_sft_writes_shards_mask_and_tokenizer(tiny_pretrained, smol_tokenizer, tmp_path):
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"prompt": "Say hi", "completion": "hi"}])
    from megalang.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["data", "tokenize", "--format", "sft", "--input", str(src),
                                      "--tokenizer", str(tiny_pretrained), "--out", str(tmp_path / "sft")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "sft" / "manifest.json").read_text())
    assert manifest["format"] == "sft" and manifest["counts"]["examples"] == 2
    # numpy-readable without megalang: tokens and mask line up one to one.
    tokens = np.fromfile(tmp_path / "sft" / "train-00000.bin", dtype=manifest["dtype"])
    mask = np.fromfile(tmp_path / "sft" / "train-00000.mask", dtype=np.uint8)
    assert len(tokens) == len(mask) == manifest["counts"]["tokens"]
    assert int(mask.sum()) == manifest["counts"]["assistant_tokens"]
    examples = read_sft_examples(tmp_path / "sft", manifest)
    ids, m = render_example(smol_tokenizer, CHAT)
    assert examples[0][0].tolist() == ids.tolist() and examples[0][1].tolist() == m.tolist()
    assert (tmp_path / "sft" / "tokenizer" / "tokenizer.json").is_file()


def test_tokenize_sft_bad_file_leaves_nothing(tiny_pretrained, tmp_path):
    src = write_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}, {"messages": [{"role": "user", "content": "x"}]}])
    with pytest.raises(UserError, match=r"chat.jsonl:2: no assistant turn"):
        tokenize_sft(SftTokenizeConfig(input=str(src), model=str(tiny_pretrained), out=str(tmp_path / "sft")))
    assert not (tmp_path / "sft").exists() and not (tmp_path / "sft.tmp").exists()
