"""Single-process parts of the parallelize passes (the sharding passes run in tests/dist)."""

import torch

from megalang.config import ModelConfig
from megalang.model.build import build_model
from megalang.parallel.parallelize import apply_ac, decoder_blocks


def test_selective_activation_checkpointing_recomputes_every_kth_block():
    model = build_model(ModelConfig(preset="tiny"), 64, 32, {}, seed=0)
    apply_ac(model, every=2)
    calls = []
    for i, block in enumerate(decoder_blocks(model)):
        if getattr(block, "gradient_checkpointing", False):
            inner = block._gradient_checkpointing_func
            block._gradient_checkpointing_func = lambda *a, _i=i, _f=inner, **k: calls.append(_i) or _f(*a, **k)
    model(input_ids=torch.randint(0, 64, (2, 16))).logits.sum().backward()
    assert calls == [0, 2]
