"""`megalang federated …` from the command line: an encrypted federation gives the plaintext one's model within
CKKS precision, and every mistake a user can make is one line and exit code 2, before any model loads."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from federation_helpers import QUESTIONS, free_port
from typer.testing import CliRunner

from megalang.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["federated", *map(str, args)])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys") / "keys"
    result = invoke("keygen", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def chats(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n"
                            for q in QUESTIONS for a in ("Yes.", "No.")), encoding="utf-8")
    return path


def learned(run, base):
    """What the federation changed: the run's merged weights minus the pretrained ones."""
    import torch
    from transformers import AutoModelForCausalLM

    from megalang.model.load import load_trained_model

    model, _ = load_trained_model(run)
    start = dict(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).named_parameters())
    return np.concatenate([(p - start[n]).detach().double().numpy().ravel() for n, p in model.named_parameters()])


@pytest.mark.slow
def test_an_encrypted_federation_gives_the_plaintext_model(tiny_pretrained, chats, keys, tmp_path):
    common = ["recipes/federated-lora.yaml", f"model.pretrained={tiny_pretrained}", f"data.sft={chats}", "clients=2",
              "federated.rounds=2", "federated.local_steps=3", "train.seq_len=64"]
    runs = {}
    for mode in ("none", "ckks"):
        runs[mode] = tmp_path / mode
        result = invoke("simulate", *common, f"run.dir={runs[mode]}", f"federated.encryption={mode}",
                        f"federated.context={keys}", f"federated.address=127.0.0.1:{free_port()}")
        assert result.exit_code == 0, result.output + (runs[mode] / "site-0.log").read_text()[-2000:]
    plain = learned(runs["none"] / "site-0", tiny_pretrained)
    encrypted = learned(runs["ckks"] / "site-0", tiny_pretrained)
    assert np.linalg.norm(plain) > 0 and np.linalg.norm(encrypted - plain) / np.linalg.norm(plain) < 1e-4
    rounds = {m: [json.loads(x) for x in (runs[m] / "server" / "rounds.jsonl").read_text().splitlines()]
              for m in runs}
    # Ciphertexts: ~57 bytes per value on the way in, against 4 for float32.
    assert rounds["ckks"][0]["received_bytes"] > 10 * rounds["none"][0]["received_bytes"]
    state = json.loads((runs["ckks"] / "server" / "rounds" / "round-2" / "state.json").read_text())
    assert state["encryption"] == "ckks" and state["context_sha256"]


def test_the_server_refuses_the_secret_key_and_a_site_the_public_one(keys, tmp_path):
    common = ["recipes/federated-lora.yaml", "model.pretrained=unused", f"run.dir={tmp_path / 'r'}"]
    result = invoke("server", *common, f"federated.context={keys / 'secret.ctx'}")
    assert result.exit_code == 2 and "holds the secret key: the server must not" in result.output
    result = invoke("client", *common, "site=a", f"federated.context={keys / 'public.ctx'}", "data.sft=x.jsonl")
    assert result.exit_code == 2 and "a site needs secret.ctx" in result.output
    result = invoke("server", *common, "federated.context=null")
    assert result.exit_code == 2 and "federated.encryption=ckks needs federated.context" in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, message", [
    (["client", "recipes/federated-lora.yaml", "federated.encryption=none"], "needs site=NAME"),
    (["client", "recipes/federated-lora.yaml", "site=../../etc"], "letters, digits, - and _ only"),
    (["simulate", "recipes/federated-lora.yaml", "federated.encryption=none"], "needs clients=N"),
    (["simulate", "recipes/federated-lora.yaml", "federated.encryption=none", "clients=2", "data.shards=/nope"],
     "needs federated.site_data"),
    (["simulate", "recipes/federated-lora.yaml", "federated.encryption=none", "clients=3", "federated.site_data=[a]"],
     "names 1 sources"),
    (["simulate", "recipes/federated-lora.yaml", "federated.encryption=none", "clients=1"],
     "fewer than federated.min_clients"),
    (["server", "recipes/federated-lora.yaml", "federated.encryption=none", "federated.address=nonsense"],
     "expected HOST:PORT"),
    (["server", "recipes/federated-lora.yaml", "federated.dp_noise=1"], "needs federated.dp_clip"),
])
def test_mistakes_are_one_line_and_exit_2(args, message, tmp_path):
    result = invoke(*args, f"run.dir={tmp_path / 'r'}")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_an_address_in_use_and_an_existing_key_folder(keys, tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = invoke("server", "recipes/federated-lora.yaml", "federated.encryption=none",
                        f"federated.address=127.0.0.1:{port}", f"run.dir={tmp_path / 'r'}")
    assert result.exit_code == 2 and f"127.0.0.1:{port}: cannot listen there" in result.output
    result = invoke("keygen", keys)
    assert result.exit_code == 2 and "never overwritten" in result.output


def test_simulate_with_a_dealt_jsonl_reports_a_bad_site_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe not utf-8\n")
    result = invoke("simulate", "recipes/federated-lora.yaml", "federated.encryption=none", "clients=2",
                    f"data.sft={bad}", f"run.dir={tmp_path / 'r'}", f"federated.address=127.0.0.1:{free_port()}")
    assert result.exit_code == 2 and f"data.sft={bad}: cannot read it" in result.output


def make_tls(folder):
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files in `folder`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir()
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "federation test CA")])

    def certificate(subject, public_key, *extensions):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    (folder / "ca.pem").write_bytes(certificate(ca_name, ca_key.public_key(),
                                                (x509.BasicConstraints(ca=True, path_length=None), True)))
    (folder / "server.pem").write_bytes(certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key.public_key(),
        (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)))
    (folder / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return folder


@pytest.mark.slow
def test_a_federation_over_tls(tiny_pretrained, chats, tmp_path):
    tls = make_tls(tmp_path / "tls")
    result = invoke("simulate", "recipes/federated-lora.yaml", f"model.pretrained={tiny_pretrained}",
                    f"data.sft={chats}",
                    "clients=2", "federated.rounds=1", "federated.local_steps=2", "train.seq_len=64",
                    "federated.encryption=none", f"run.dir={tmp_path / 'r'}",
                    f"federated.address=127.0.0.1:{free_port()}",
                    f"federated.tls_ca={tls / 'ca.pem'}", f"federated.tls_cert={tls / 'server.pem'}",
                    f"federated.tls_key={tls / 'server.key'}")
    assert result.exit_code == 0, result.output + (tmp_path / "r" / "site-0.log").read_text()[-2000:]
    rounds = [json.loads(x) for x in (tmp_path / "r" / "server" / "rounds.jsonl").read_text().splitlines()]
    assert sorted(rounds[0]["accepted"]) == ["0", "1"]


def test_tls_files_are_checked(tmp_path):
    (tmp_path / "not.pem").write_text("hello")
    common = ["server", "recipes/federated-lora.yaml", "federated.encryption=none", f"run.dir={tmp_path / 'r'}",
              f"federated.address=127.0.0.1:{free_port()}"]
    result = invoke(*common, f"federated.tls_ca={tmp_path / 'not.pem'}")
    assert result.exit_code == 2 and "needs federated.tls_ca, federated.tls_cert and federated.tls_key" in result.output
    result = invoke(*common, *(f"federated.tls_{k}={tmp_path / 'not.pem'}" for k in ("ca", "cert", "key")))
    assert result.exit_code == 2 and "is not a PEM file" in result.output


@pytest.mark.slow
def test_client_level_dp_with_dp_sgd_inside_each_site(tiny_pretrained, chats, tmp_path):
    from opacus.accountants import RDPAccountant

    root = tmp_path / "r"
    result = invoke("simulate", "recipes/federated-lora.yaml", f"model.pretrained={tiny_pretrained}",
                    f"data.sft={chats}",
                    "clients=2", "federated.rounds=2", "federated.local_steps=2", "train.seq_len=64",
                    "federated.encryption=none", f"run.dir={root}", f"federated.address=127.0.0.1:{free_port()}",
                    "federated.dp_clip=0.05", "federated.dp_noise=0.8", "federated.weighting=uniform",
                    "privacy.target_epsilon=8", "privacy.delta=0.01", "data.packing=false")
    assert result.exit_code == 0, result.output + (root / "site-0.log").read_text()[-2000:]
    summary = json.loads((root / "server" / "summary.json").read_text())
    want = RDPAccountant()
    want.history = [(0.8, 1.0, 1), (0.8, 1.0, 1)]
    assert summary["epsilon"] == pytest.approx(want.get_epsilon(delta=1e-5)) and summary["noise_multiplier"] == 0.8
    rounds = [json.loads(x) for x in (root / "server" / "rounds.jsonl").read_text().splitlines()]
    assert [r["weights"] for r in rounds] == [[0.5, 0.5]] * 2
    fits = [json.loads(x) for x in (root / "site-0" / "federated.jsonl").read_text().splitlines() if '"fit"' in x]
    assert all(f["update_norm"] > 0 for f in fits)
    site = json.loads((root / "site-0" / "summary.json").read_text())
    assert 0 < site["epsilon"] <= 8  # DP-SGD inside the site (Opacus), reported beside the federation's ε
