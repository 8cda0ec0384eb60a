"""CKKS aggregation (federated/crypto.py): the encrypted FedAvg equals the plaintext one on real LoRA deltas of
SmolLM2-135M; the server's context cannot decrypt; accumulation over rounds; damaged keys and ciphertexts."""

from __future__ import annotations

import time

import numpy as np
import pytest

from megalang.errors import UserError
from megalang.federated.crypto import (
    BadCiphertext,
    CkksParams,
    chunk_sizes,
    decrypt,
    encrypt,
    keygen,
    load_context,
    weighted_sum,
)
from megalang.federated.updates import fedavg

pytest.importorskip("tenseal")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys") / "k"
    keygen(out)
    return out


@pytest.fixture(scope="module")
def secret(keys):
    return load_context(keys / "secret.ctx")


@pytest.fixture(scope="module")
def public(keys):
    return load_context(keys / "public.ctx")


def lora_deltas(smol_hf, sites: int = 3) -> list[np.ndarray]:
    """One real AdamW step (lr 2e-3) of SmolLM2-135M with megalang's default LoRA r=8 adapters (every attention and
    MLP projection) from the same initial adapters, on a different text per site: the trainable weights' change."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smol_hf)
    texts = ["Port scan from 10.0.0.5 against the DMZ web tier.", "CVE-2024-3094: backdoor in xz utils liblzma.",
             "Phishing mail with a macro-enabled invoice attachment."]
    deltas = []
    for site in range(sites):
        torch.manual_seed(0)  # the same initial adapters at every site
        model = AutoModelForCausalLM.from_pretrained(smol_hf, dtype=torch.float32)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():  # B starts at zero; a first step moves it, so give A and B a realistic state
            for p in params:
                p.add_(torch.randn_like(p) * 1e-3)
        before = torch.cat([p.detach().flatten() for p in params]).double()
        optimizer = torch.optim.AdamW(params, lr=2e-3)
        ids = tokenizer(texts[site], return_tensors="pt").input_ids
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        deltas.append((torch.cat([p.detach().flatten() for p in params]).double() - before).numpy())
    return deltas


@pytest.mark.slow
def test_encrypted_fedavg_equals_plaintext_on_smollm2_lora_deltas(smol_hf, secret, public):
    deltas = lora_deltas(smol_hf)
    examples = [3, 5, 8]
    weights = [n / sum(examples) for n in examples]
    started = time.perf_counter()
    ciphertexts = [encrypt(secret, d) for d in deltas]
    encrypted = time.perf_counter()
    summed = weighted_sum(public, ciphertexts, weights)  # the server: public context only
    added = time.perf_counter()
    got = decrypt(secret, summed, deltas[0].size)
    done = time.perf_counter()
    want = fedavg(deltas, weights)
    relative = np.linalg.norm(got - want) / np.linalg.norm(want)
    print(f"{deltas[0].size:,} values per site, {len(ciphertexts[0])} ciphertexts, "
          f"{sum(map(len, ciphertexts[0])) / deltas[0].size:.1f} B/value sent, "
          f"{sum(map(len, summed)) / deltas[0].size:.1f} B/value back; encrypt {encrypted - started:.2f} s (3 sites), "
          f"add {added - encrypted:.2f} s, decrypt {done - added:.2f} s; relative error {relative:.2e}, "
          f"max abs {np.abs(got - want).max():.2e} (values up to {np.abs(want).max():.2e})")
    assert deltas[0].size == 2_442_240  # r=8 on SmolLM2's 30 layers × 7 projections
    assert relative <= 1e-4


def test_the_servers_context_cannot_decrypt(secret, public):
    chunks = encrypt(secret, np.linspace(-1, 1, 5000) * 1e-2)
    assert chunk_sizes(public, chunks) == [4096, 904]
    with pytest.raises(UserError, match="holds no secret key"):
        decrypt(public, chunks, 5000)
    import tenseal as ts

    with pytest.raises(ValueError, match="secret_key"):  # TenSEAL itself refuses, not only megalang's check
        ts.ckks_vector_from(public.ctx, chunks[0]).decrypt()
    assert not public.has_secret and secret.has_secret


def test_accumulating_rounds_with_noise_matches_plaintext(secret, public):
    rng = np.random.default_rng(0)
    size, accumulated, expected = 6000, None, np.zeros(6000)
    for _ in range(5):
        updates = [rng.standard_normal(size) * 1e-2 for _ in range(3)]
        weights = [0.2, 0.3, 0.5]
        noise = rng.standard_normal(size) * 1e-3
        accumulated = weighted_sum(public, [encrypt(secret, u) for u in updates], weights, accumulated, noise)
        expected += fedavg(updates, weights) + noise
    np.testing.assert_allclose(decrypt(secret, accumulated, size), expected, atol=1e-6)


def test_parameters_are_128_bit_secure():
    params = CkksParams()
    assert params.security_bits == 128 and params.slots == 4096 and sum(params.coeff_mod_bit_sizes) <= 218


def test_keygen_files_and_refusal_to_overwrite(keys):
    import json
    import stat

    assert stat.S_IMODE((keys / "secret.ctx").stat().st_mode) == 0o600
    info = json.loads((keys / "context.json").read_text())
    assert info["security_bits"] == 128 and info["poly_modulus_degree"] == 8192
    before = (keys / "secret.ctx").read_bytes()
    with pytest.raises(UserError, match="never overwritten"):
        keygen(keys)
    assert (keys / "secret.ctx").read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"\x00\xff" * 100, b"not a context at all", "truncated"])
def test_bad_context_files_name_the_file(tmp_path, keys, content):
    path = tmp_path / "bad.ctx"
    path.write_bytes((keys / "public.ctx").read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(UserError, match=f"{path} is not a TenSEAL CKKS context"):
        load_context(path)
    with pytest.raises(UserError, match="does not exist"):
        load_context(tmp_path / "missing.ctx")


def test_junk_ciphertexts_and_wrong_sizes(secret, public):
    with pytest.raises(BadCiphertext):
        chunk_sizes(public, [b"\x01\x02junk" * 50])
    chunks = encrypt(secret, np.ones(100))
    with pytest.raises(UserError, match="hold 100 values, this site trains 99"):
        decrypt(secret, chunks, 99)
