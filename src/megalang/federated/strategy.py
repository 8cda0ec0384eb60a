"""The server's strategy: Flower's FedProx (FedAvg when μ = 0) with megalang's checks, encrypted aggregation,
client-level DP noise and a checkpoint after every round.

What the server holds is `D`, the accumulated mean update (sites hold the base weights; global = base + D). In the
clear D is one float32 array per trainable tensor; under CKKS it is ciphertexts the server cannot read, updated by
homomorphic additions with the public context only (federated/crypto.py).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from typing import Any

import numpy as np
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedProx

from megalang.config import FederatedConfig
from megalang.errors import UserError
from megalang.federated.state import ServerState, epsilon, save_round
from megalang.federated.updates import (
    check_metrics,
    check_plain,
    concat,
    fedavg,
    from_wire,
    normalised_weights,
    split,
    to_wire,
)
from megalang.store.files import append_jsonl
from megalang.store.run_dir import ServerDir

# Crash tests: the server SIGKILLs itself right after round N's checkpoint and log line (the restart resumes there).
SERVER_KILL_ENV = "MEGALANG_FAULT_SERVER_ROUND"


class FederatedStrategy(FedProx):
    def __init__(self, fed: FederatedConfig, state: ServerState, server_dir: ServerDir, context=None, log=print,
                 abort=None):
        super().__init__(
            fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=fed.min_clients,
            min_evaluate_clients=fed.min_clients, min_available_clients=fed.min_clients, accept_failures=True,
            proximal_mu=fed.proximal_mu if fed.strategy == "fedprox" else 0.0,
            on_fit_config_fn=self._fit_config, on_evaluate_config_fn=self._evaluate_config,
        )
        self.fed, self.state, self.dir, self.context, self.log = fed, state, server_dir, context, log
        self.rng = np.random.default_rng()  # OS entropy: DP noise must not be reproducible by anyone
        # A fresh federation waits for every expected site before round 1; a resumed one for min_clients.
        self.first_wait = fed.min_clients if state.round else (fed.clients or fed.min_clients)
        self.abort = abort  # () -> reason to stop waiting for sites, or None
        self._round_started = time.perf_counter()  # reset when each round's fit is configured

    def __repr__(self) -> str:
        return f"FederatedStrategy({self.fed.strategy}, encryption={self.fed.encryption})"

    # --- what the clients are told ----------------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters(self.state.accumulated)

    def _fit_config(self, server_round: int) -> dict[str, Scalar]:
        return {"round": self.state.round + 1, "local_steps": self.fed.local_steps}

    def _evaluate_config(self, server_round: int) -> dict[str, Scalar]:
        return {"round": self.state.round}

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        self.wait_for_sites(client_manager)
        self._round_started = time.perf_counter()
        return super().configure_fit(server_round, parameters, client_manager)

    def wait_for_sites(self, client_manager: ClientManager) -> None:
        """Until enough sites are connected: every expected one (federated.clients) before the first round, then
        federated.min_clients. Not Flower's day-long wait: after round_timeout_s (or when `abort` has a reason, as
        when a simulation's sites have exited) the federation stops with the reason."""
        need, first = self.first_wait or self.fed.min_clients, bool(self.first_wait)
        self.first_wait = 0
        deadline = time.monotonic() + self.fed.round_timeout_s
        while (connected := client_manager.num_available()) < need:
            why = self.abort() if self.abort else None
            if why:
                raise UserError(why)
            if time.monotonic() > deadline:
                if first and connected >= self.fed.min_clients:
                    self.log(f"federated: {connected} of {need} sites connected after {self.fed.round_timeout_s:g} s; "
                             "starting with them")
                    return
                raise UserError(f"{connected} sites connected, federated.min_clients={self.fed.min_clients}, after "
                                f"federated.round_timeout_s={self.fed.round_timeout_s:g}: start more sites or lower "
                                "federated.min_clients; the server resumes from round "
                                f"{self.state.round} when restarted")
            time.sleep(0.2)

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager):
        """The round's global weights to every site (adopted, checkpointed, scored) every `evaluate_every` rounds
        and after the last one."""
        every, done = self.fed.evaluate_every, self.state.round
        if done < self.fed.rounds and not (every and done % every == 0):
            return []
        return super().configure_evaluate(server_round, parameters, client_manager)

    def evaluate(self, server_round: int, parameters: Parameters):
        return None  # no central data: the sites score the global weights on their held-out splits

    # --- aggregation ------------------------------------------------------------------------------------------

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]], failures: list[Any]):
        started = time.perf_counter()
        candidates, rejected = [], {}
        for proxy, res in results:
            site = str(res.metrics.get("site", proxy.cid))
            reason = check_metrics(dict(res.metrics))
            if not reason:
                reason, update = self._check_update(parameters_to_ndarrays(res.parameters), res.metrics)
            if reason:
                rejected[site] = reason
                continue
            candidates.append((site, update, dict(res.metrics)))
        candidates = self._pin(candidates, rejected)
        record: dict[str, Any] = {
            "round": self.state.round + 1, "accepted": [s for s, _, _ in candidates], "rejected": rejected,
            "failures": [failure_reason(f) for f in failures],
            "received_bytes": sum(len(t) for _, r in results for t in r.parameters.tensors),
        }
        for site, reason in rejected.items():
            self.log(f"federated: round {record['round']}: update from {site} rejected: {reason}")
        if len(candidates) < self.fed.min_clients:
            record["skipped"] = (f"{len(candidates)} usable updates, federated.min_clients={self.fed.min_clients}: "
                                 "the global weights stay as they were")
            self.log(f"federated: round {record['round']}: {record['skipped']}")
            self._finish_round(record, started)
            return None, {}
        examples = [int(m["examples"]) for _, _, m in candidates]
        weights = normalised_weights(examples, self.fed.weighting)
        noise = self._noise(len(candidates))
        if self.context is not None:
            from megalang.federated.crypto import weighted_sum

            base = from_wire(self.state.accumulated) if self.state.accumulated else None
            summed = weighted_sum(self.context, [u for _, u, _ in candidates], weights, base, noise)
            self.state.accumulated = to_wire(summed)
        else:
            mean = fedavg([concat(a) for _, a, _ in candidates], weights)
            if noise is not None:
                mean += noise
            total = mean + (concat(self.state.accumulated) if self.state.accumulated else 0.0)
            self.state.accumulated = [a.astype(np.float32) for a in split(total, self.state.shapes_layout())]
        if noise is not None:
            q = len(candidates) / self.fed.dp_sites if self.fed.dp_sites else 1.0
            self.state.dp_history.append([self.fed.dp_noise, min(q, 1.0), 1])
        record.update(examples=examples, weights=weights, loss={s: m.get("loss") for s, _, m in candidates},
                      clipped=sum(int(m.get("clipped", 0)) for _, _, m in candidates))
        if self.state.dp_history:
            record["epsilon"] = epsilon(self.state.dp_history, self.fed.dp_delta)
        self._finish_round(record, started)
        return ndarrays_to_parameters(self.state.accumulated), {"accepted": len(candidates)}

    def _check_update(self, arrays: list[np.ndarray], metrics: dict) -> tuple[str | None, Any]:
        """(the reason to reject a site's update or None, the update: its arrays in the clear, its deserialized
        ciphertexts under CKKS, which the aggregation then reuses)."""
        pins = self.state.pins
        for key in ("layout_sha256", "base_sha256", "size"):
            if key in pins and metrics[key] != pins[key]:
                return (f"{key} {str(metrics[key])[:16]} differs from the federation's {str(pins[key])[:16]}: the "
                        "site runs another recipe (model.*, lora.*, seed)"), None
        if self.context is None:
            shapes = pins.get("shapes")
            layout = [(f"tensor {i}", tuple(s)) for i, s in enumerate(shapes or [a.shape for a in arrays])]
            values = sum(a.size for a in arrays)
            return check_plain(arrays, layout, self.fed.dp_clip) or (
                f"{values} values, the site says size={metrics['size']}" if values != metrics["size"] else None), arrays
        from megalang.federated.crypto import vectors

        try:
            loaded = vectors(self.context, from_wire(arrays))
        except ValueError as e:  # BadCiphertext, or a malformed pair of arrays
            return f"not a CKKS ciphertext of this federation's context: {e}", None
        if sum(v.size() for v in loaded) != metrics["size"]:
            values = sum(v.size() for v in loaded)
            return f"ciphertexts hold {values} values, the site says size={metrics['size']}", None
        return None, loaded

    def _pin(self, candidates: list, rejected: dict[str, str]) -> list:
        """Round 1 fixes what every later update must match (layout, base weights, size, shapes): the value most
        sites agree on; a site that disagrees is rejected with the reason."""
        if self.state.pins or not candidates:
            return candidates

        def key(c):
            m = c[2]
            return (m["layout_sha256"], m["base_sha256"], m["size"],
                    None if self.context is not None else tuple(tuple(a.shape) for a in c[1]))  # c[1]: the arrays

        winner, _ = Counter(key(c) for c in candidates).most_common(1)[0]
        self.state.pins = {"layout_sha256": winner[0], "base_sha256": winner[1], "size": winner[2]}
        if winner[3] is not None:
            self.state.pins["shapes"] = [list(s) for s in winner[3]]
        for c in candidates:
            if key(c) != winner:
                rejected[c[0]] = "its layout or base weights differ from the other sites' (another recipe or seed)"
        return [c for c in candidates if key(c) == winner]

    def _noise(self, k: int) -> np.ndarray | None:
        """Client-level DP: N(0, (z·C/K)²) on the mean of K clipped updates (DP-FedAvg, McMahan et al. 2018)."""
        if self.fed.dp_noise <= 0:
            return None
        return self.rng.normal(0.0, self.fed.dp_noise * self.fed.dp_clip / k, size=int(self.state.pins["size"]))

    def _finish_round(self, record: dict[str, Any], started: float) -> None:
        self.state.round += 1
        record["aggregate_s"] = round(time.perf_counter() - started, 3)
        record["round_s"] = round(time.perf_counter() - self._round_started, 3)
        record["global_sha256"] = save_round(self.dir, self.state)  # the checkpoint comes before the log line
        record["sent_bytes_per_site"] = sum(a.nbytes for a in self.state.accumulated)
        record["time"] = time.time()
        append_jsonl(self.dir.log, record)
        if os.environ.get(SERVER_KILL_ENV) == str(self.state.round):  # crash tests: die as a power cut would
            os.kill(os.getpid(), signal.SIGKILL)
        self.log(f"federated: round {record['round']} done: {len(record['accepted'])} sites aggregated"
                 + (f", ε={record['epsilon']:.3g}" if "epsilon" in record else ""))

    def aggregate_evaluate(self, server_round: int, results, failures):
        scored = [(r.num_examples, r.loss) for _, r in results if r.num_examples > 0]
        if not scored:
            return None, {}
        loss = sum(n * v for n, v in scored) / sum(n for n, _ in scored)
        append_jsonl(self.dir.log, {"round": self.state.round, "event": "evaluate", "val_loss": loss,
                                    "sites": len(results), "failures": len(failures)})
        self.log(f"federated: round {self.state.round}: held-out loss {loss:.4f} over {len(scored)} sites")
        return loss, {}


def failure_reason(failure: Any) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    _, res = failure
    status = getattr(res, "status", None)
    return f"{getattr(status, 'code', '')}: {getattr(status, 'message', '')}".strip(": ")
