"""The server's strategy without a network: FedAvg in float64, the checks that reject a site's update (shape,
non-finite, clip norm, metrics, other recipe), min_clients, client-level DP noise and ε, the round checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from opacus.accountants import RDPAccountant

from megalang.config import FederatedConfig
from megalang.errors import UserError
from megalang.federated.state import ServerState, load_state, save_round
from megalang.federated.strategy import FederatedStrategy
from megalang.federated.updates import clip, concat, payload_sha256
from megalang.store.run_dir import ServerDir

SHAPES = [(4, 3), (2, 4)]


@dataclass
class Proxy:
    cid: str


def update(seed: int, scale: float = 0.01) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in SHAPES]


def fit_res(site: str, arrays: list[np.ndarray], examples: int = 10, **metrics) -> tuple[Proxy, FitRes]:
    size = 20 if arrays and arrays[-1].dtype == np.uint8 else sum(a.size for a in arrays)  # ciphertexts: 20 values
    base = {"site": site, "layout_sha256": "L" * 64, "base_sha256": "B" * 64, "size": size, "examples": examples,
            "loss": 1.0, "steps": 3}
    base.update(metrics)
    return Proxy(site), FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), examples, base)


def strategy(tmp_path, **fed) -> FederatedStrategy:
    cfg = FederatedConfig(**{"min_clients": 2, **fed})
    logged: list[str] = []
    s = FederatedStrategy(cfg, ServerState(), ServerDir(tmp_path / "server"), log=logged.append)
    s.logged = logged
    return s


def test_fedavg_weights_sites_by_examples_in_float64(tmp_path):
    s = strategy(tmp_path)
    ups = [update(0), update(1), update(2)]
    params, _ = s.aggregate_fit(1, [fit_res("a", ups[0], 10), fit_res("b", ups[1], 30), fit_res("c", ups[2], 60)], [])
    got = concat(parameters_to_ndarrays(params))
    want = 0.1 * concat(ups[0]) + 0.3 * concat(ups[1]) + 0.6 * concat(ups[2])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # The next round adds to the accumulated update.
    params, _ = s.aggregate_fit(2, [fit_res("a", ups[0], 10), fit_res("b", ups[0], 30)], [])
    np.testing.assert_allclose(concat(parameters_to_ndarrays(params)), want + concat(ups[0]), rtol=1e-6, atol=1e-9)
    lines = [json.loads(x) for x in (tmp_path / "server" / "rounds.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [1, 2] and lines[0]["weights"] == [0.1, 0.3, 0.6]


@pytest.mark.parametrize("bad, reason", [
    (lambda u: [u[0][:2], u[1]], "shape (2, 3), expected (4, 3)"),
    (lambda u: [u[0]], "1 tensors, expected 2"),
    (lambda u: [np.where(u[0] > 0, np.nan, u[0]).astype(np.float32), u[1]], "non-finite"),
    (lambda u: [u[0].astype(np.int32), u[1]], "dtype int32"),
])
def test_a_bad_update_is_rejected_with_its_reason_and_the_round_completes(tmp_path, bad, reason):
    s = strategy(tmp_path)
    good = [fit_res("a", update(0)), fit_res("b", update(1))]
    s.aggregate_fit(1, good, [])  # round 1 pins the layout
    # The site claims the pinned size, so the checks on the tensors themselves decide.
    params, _ = s.aggregate_fit(2, good + [fit_res("evil", bad(update(2)), size=20)], [])
    assert params is not None
    line = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[-1])
    assert line["accepted"] == ["a", "b"] and reason in line["rejected"]["evil"]
    assert any("evil rejected" in m and reason in m for m in s.logged)


def test_metrics_a_site_may_not_send_and_another_recipe_are_rejected(tmp_path):
    s = strategy(tmp_path)
    ups = [update(i) for i in range(4)]
    s.aggregate_fit(1, [fit_res("a", ups[0]), fit_res("b", ups[1]), fit_res("c", ups[2], base_sha256="X" * 64)], [])
    first = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[0])
    assert first["accepted"] == ["a", "b"] and "base weights differ" in first["rejected"]["c"]
    s.aggregate_fit(2, [fit_res("a", ups[0]), fit_res("b", ups[1]), fit_res("c", ups[2], text="a log line"),
                        fit_res("d", ups[3], layout_sha256="Y" * 64)], [])
    second = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[1])
    assert "metric 'text' is not one a site may send" in second["rejected"]["c"]
    assert "layout_sha256" in second["rejected"]["d"]


def test_fewer_usable_updates_than_min_clients_keep_the_global_weights(tmp_path):
    s = strategy(tmp_path, min_clients=2)
    s.aggregate_fit(1, [fit_res("a", update(0)), fit_res("b", update(1))], [])
    before = [a.copy() for a in s.state.accumulated]
    params, _ = s.aggregate_fit(2, [fit_res("a", update(2))], [RuntimeError("site b: connection lost")])
    assert params is None and all(np.array_equal(x, y) for x, y in zip(before, s.state.accumulated))
    line = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[-1])
    assert "min_clients=2" in line["skipped"] and line["failures"] == ["RuntimeError: site b: connection lost"]
    assert s.state.round == 2  # the round happened; its checkpoint holds the unchanged weights
    saved = load_state(ServerDir(tmp_path / "server"), FederatedConfig(), None)
    assert saved.accumulated[0].tobytes() == before[0].tobytes()


def test_client_level_dp_clips_noises_and_accounts(tmp_path):
    s = strategy(tmp_path, dp_clip=0.05, dp_noise=1.0, weighting="uniform", dp_sites=10)
    ups = [update(i, scale=0.001) for i in range(3)]
    s.aggregate_fit(1, [fit_res(str(i), u) for i, u in enumerate(ups)], [])
    noise = concat(s.state.accumulated) - np.mean([concat(u) for u in ups], axis=0)
    # N(0, (z·C/K)²) per value: the sample deviation of 20 values lands within a factor 2 of 0.05/3.
    assert 0.5 * 0.05 / 3 < noise.std() < 2 * 0.05 / 3
    # An update over the clip norm is rejected (sites clip before they send).
    big = [u * 1000 for u in ups[0]]
    s.aggregate_fit(2, [fit_res("0", ups[0]), fit_res("1", ups[1]), fit_res("2", big)], [])
    line = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[-1])
    assert "exceeds federated.dp_clip=0.05" in line["rejected"]["2"]
    want = RDPAccountant()
    want.history = [(1.0, 0.3, 1), (1.0, 0.2, 1)]
    assert line["epsilon"] == pytest.approx(want.get_epsilon(delta=1e-5))
    clipped, norm, was = clip(concat(big), 0.05)
    assert was and np.linalg.norm(clipped) == pytest.approx(0.05) and norm > 0.05


def test_noise_needs_uniform_weights_and_a_clip():
    with pytest.raises(ValueError, match="needs federated.dp_clip"):
        FederatedConfig(dp_noise=1.0)
    with pytest.raises(ValueError, match="weighting=uniform"):
        FederatedConfig(dp_noise=1.0, dp_clip=1.0)


def test_round_checkpoint_round_trip_and_damage(tmp_path):
    server = ServerDir(tmp_path / "server")
    state = ServerState(round=3, accumulated=update(5), pins={"size": 20}, dp_history=[[1.0, 1.0, 1]])
    digest = save_round(server, state)
    back = load_state(server, FederatedConfig(), None)
    assert back.round == 3 and payload_sha256(back.accumulated) == digest == payload_sha256(state.accumulated)
    with pytest.raises(UserError, match="federated.encryption=none and another key"):
        load_state(server, FederatedConfig(encryption="ckks", context="k"), "abc")
    state.round = 4
    save_round(server, state)
    save_round(server, ServerState(round=5, accumulated=update(6)))
    assert server.round_numbers() == [4, 5]  # the newest two are kept
    blob = server.round(5) / "global.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(UserError, match="differs from state.json"):
        load_state(server, FederatedConfig(), None)


def test_encrypted_rounds_reject_junk_and_decrypt_to_the_weighted_mean(tmp_path):
    pytest.importorskip("tenseal")
    from megalang.federated.crypto import decrypt, encrypt, keygen, load_context
    from megalang.federated.updates import to_wire

    keygen(tmp_path / "keys")
    secret, public = load_context(tmp_path / "keys" / "secret.ctx"), load_context(tmp_path / "keys" / "public.ctx")
    cfg = FederatedConfig(min_clients=2, encryption="ckks", context=str(tmp_path / "keys"))
    s = FederatedStrategy(cfg, ServerState(encryption="ckks"), ServerDir(tmp_path / "server"), public,
                          log=lambda m: None)
    ups = [concat(update(i)) for i in range(2)]
    wire = [to_wire(encrypt(secret, u)) for u in ups]
    junk = [wire[0][0], np.frombuffer(b"\x07" * int(wire[0][0].sum()), dtype=np.uint8)]
    params, _ = s.aggregate_fit(1, [fit_res("a", wire[0], 10), fit_res("b", wire[1], 30),
                                    fit_res("evil", junk, 10)], [])
    line = json.loads((tmp_path / "server" / "rounds.jsonl").read_text().splitlines()[-1])
    assert line["accepted"] == ["a", "b"] and "not a CKKS ciphertext" in line["rejected"]["evil"]
    from megalang.federated.updates import from_wire

    got = decrypt(secret, from_wire(parameters_to_ndarrays(params)), 20)
    np.testing.assert_allclose(got, 0.25 * ups[0] + 0.75 * ups[1], atol=1e-7)
