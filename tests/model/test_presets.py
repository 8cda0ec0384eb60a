"""model/presets.py: the registry, and the analytic parameter count against real models."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from megalang.errors import UserError
from megalang.model.presets import PRESETS, count_params, get_preset


def real_count(kwargs) -> int:
    kwargs = dict(kwargs)
    theta = kwargs.pop("rope_theta")
    config = LlamaConfig(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": theta})
    with torch.device("meta"):  # shapes only: numel works without memory
        model = LlamaForCausalLM(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["debug", "tiny", "1b"])
def test_count_params_equals_the_real_model(name):
    assert count_params(get_preset(name)) == real_count(get_preset(name))


def test_count_params_accepts_a_llama_config():
    kwargs = get_preset("debug")
    kwargs.pop("rope_theta")
    assert count_params(LlamaConfig(**kwargs)) == count_params(get_preset("debug"))


def test_sizes_match_their_names():
    assert 0.5e6 < count_params(PRESETS["debug"]) < 2e6
    assert 5e6 <= count_params(PRESETS["tiny"]) <= 10e6
    assert 115e6 < count_params(PRESETS["small"]) < 135e6
    # The published Llama 3 counts.
    assert count_params(PRESETS["1b"]) == 1_235_814_400
    assert count_params(PRESETS["8b"]) == 8_030_261_248
    assert count_params(PRESETS["70b"]) == 70_553_706_496
    assert 99e9 < count_params(PRESETS["100b"]) < 101e9


def test_100b_divides_for_tensor_and_pipeline_parallelism():
    p = PRESETS["100b"]
    assert p["num_hidden_layers"] % 8 == 0 and p["num_key_value_heads"] == 8
    assert p["num_attention_heads"] % 8 == 0 and p["intermediate_size"] % 8 == 0
    assert p["hidden_size"] // p["num_attention_heads"] == 128


def test_unknown_preset_lists_the_names():
    with pytest.raises(UserError, match="model.preset 'huge'.*debug, tiny, small, 1b, 8b, 70b, 100b"):
        get_preset("huge")


def test_get_preset_returns_a_copy():
    get_preset("debug")["hidden_size"] = 1
    assert PRESETS["debug"]["hidden_size"] == 128
