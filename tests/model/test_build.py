"""model/build.py: meta-device construction, deterministic init, config wiring, pretrained folders."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from megalang.config import ModelConfig
from megalang.errors import UserError
from megalang.model.build import build_model, init_weights, materialize

IDS = {"bos": 1, "eos": 2, "pad": 0, "unk": None}


def debug(seed=0, **model):
    return build_model(ModelConfig(preset="debug", **model), 300, 48, IDS, seed)


def state(model):
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def assert_same(a, b):
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_meta_path_equals_normal_construction_with_the_same_seed():
    model = debug(seed=5)
    normal = LlamaForCausalLM(model.config)  # built on CPU the ordinary way (HF init, real RoPE buffers)
    init_weights(normal, 5)
    assert_same(model, normal)


def test_seed_decides_the_weights():
    assert_same(debug(seed=1), debug(seed=1))
    a, b = debug(seed=1), debug(seed=2)
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)


def test_init_scales():
    model = debug()
    layers = model.config.num_hidden_layers
    assert torch.all(model.model.norm.weight == 1)
    q = model.model.layers[0].self_attn.q_proj.weight
    o = model.model.layers[0].self_attn.o_proj.weight
    assert abs(q.std().item() - 0.02) < 0.002
    assert abs(o.std().item() - 0.02 / (2 * layers) ** 0.5) < 0.002


def test_config_follows_tokenizer_and_run():
    model = debug(dropout=0.1)
    c = model.config
    assert c.vocab_size == 300 and model.lm_head.weight.shape[0] == 300
    assert c.max_position_embeddings >= 48
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 0)
    assert c._attn_implementation == "sdpa" and c.attention_dropout == 0.1
    assert model.training and model.model.embed_tokens.weight.dtype == torch.float32


def test_meta_device_is_not_materialised():
    model = build_model(ModelConfig(preset="100b"), 128_256, 2048, IDS, 0, device="meta")
    assert model.model.embed_tokens.weight.is_meta
    assert sum(p.numel() for p in model.parameters()) > 99e9


def test_materialize_reties_tied_embeddings():
    config = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    materialize(model, "cpu", seed=3)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, abs=0.003)


def test_pretrained_folder_loads_the_same_weights(tmp_path):
    model = debug(seed=3)
    model.save_pretrained(tmp_path / "hf")
    loaded = build_model(ModelConfig(pretrained=str(tmp_path / "hf")), 300, 48, IDS, seed=99)
    assert_same(model, loaded)
    assert loaded.training


def test_pretrained_errors(tmp_path):
    with pytest.raises(UserError, match="model.pretrained=.*nope"):
        build_model(ModelConfig(pretrained=str(tmp_path / "nope")), 300, 48, IDS, 0)
    debug().save_pretrained(tmp_path / "hf")
    with pytest.raises(UserError, match="tokenize data.shards"):
        build_model(ModelConfig(pretrained=str(tmp_path / "hf")), 301, 48, IDS, 0)
    with pytest.raises(UserError, match="train.seq_len"):
        build_model(ModelConfig(pretrained=str(tmp_path / "hf")), 300, 4096, IDS, 0)


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="model.preset"):
        build_model(ModelConfig(preset="nope"), 300, 48, IDS, 0)
