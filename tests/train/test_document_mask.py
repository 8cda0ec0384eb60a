"""`train.document_mask`: positions restart after each EOS, no token attends across a document boundary, a
window holding one document gives the same loss as without the mask, and a run trains with it end to end."""

from __future__ import annotations

import pytest
import torch

from megalang.config import ModelConfig, RunConfig
from megalang.model.build import build_model
from megalang.train.objectives import DocumentMasked, document_positions, next_token_loss
from megalang.train.trainer import train

from .conftest import EOS, debug_config


def test_positions_restart_after_each_eos():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, EOS, 4], [EOS, 3, 3, 3, 3, 3, 3, 3, 3]])
    assert document_positions(ids, EOS).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0, 0], [0, 0, 1, 2, 3, 4, 5, 6, 7]]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(ModelConfig(preset="debug"), 64, 32, {"bos": 1, "eos": EOS, "pad": 0, "unk": None}, seed=0,
                    device=torch.device("cpu"))
    return m.eval()


def logits(model, ids: torch.Tensor, masked: bool) -> torch.Tensor:
    extra = {"position_ids": document_positions(ids, EOS), "use_cache": False} if masked else {}
    with torch.no_grad():
        return model(input_ids=ids, **extra).logits


def test_no_token_attends_across_a_document_boundary(model):
    first = torch.tensor([[10, 11, 12, 13, EOS]])
    second = torch.tensor([[20, 21, 22, 23, 24, 25]])
    other_first = torch.tensor([[40, 41, 42, 43, EOS]])
    a, b = torch.cat([first, second], 1), torch.cat([other_first, second], 1)
    # With the mask, the second document's logits do not depend on what came before it ...
    torch.testing.assert_close(logits(model, a, True)[:, 5:], logits(model, b, True)[:, 5:], rtol=0, atol=1e-5)
    # ... and equal the logits of the second document alone.
    torch.testing.assert_close(logits(model, a, True)[:, 5:], logits(model, second, False), rtol=0, atol=1e-5)
    # Without it they do (the test can fail).
    assert (logits(model, a, False)[:, 5:] - logits(model, b, False)[:, 5:]).abs().max() > 1e-3


def test_a_single_document_window_has_the_same_loss_with_and_without_the_mask(model):
    ids = torch.arange(3, 36).remainder(60).add(3)[None]  # no EOS anywhere
    batch = (ids[:, :-1], ids[:, 1:])
    with torch.no_grad():
        plain = next_token_loss(model, batch)
        masked = DocumentMasked(next_token_loss, EOS)(model, batch)
    assert masked.item() == pytest.approx(plain.item(), abs=1e-6)


def test_a_run_trains_and_validates_within_documents(shards, tmp_path):
    cfg = debug_config(shards, tmp_path / "run", train={"max_steps": 6, "document_mask": True})
    summary = train(cfg)
    assert summary["train_loss_last"] < summary["train_loss_first"] and summary["val_loss"] is not None
    # The same run without the mask sees the documents' boundaries differently: another held-out loss.
    plain = train(debug_config(shards, tmp_path / "plain", train={"max_steps": 6}))
    assert plain["val_loss"] != summary["val_loss"]


def test_pipeline_parallel_is_refused():
    with pytest.raises(ValueError, match="train.document_mask does not support parallel.pp > 1"):
        RunConfig.model_validate({"train": {"document_mask": True}, "parallel": {"pp": 2}})
