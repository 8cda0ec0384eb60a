"""`megalang federated client`: a site. It trains on its own data in its own process and sends the server only
its update (clipped, encrypted under CKKS when the federation is), its example count and a few numbers; its
records never leave the process.

Flower drives it: `fit` (a round's global update in, the site's update out) and `evaluate` (the round's new global
update in: adopted, checkpointed, scored on the site's held-out split). Every round is one line of
RUN/federated.jsonl.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.federated.local import LocalTrainer
from megalang.federated.updates import (
    clip,
    concat,
    from_wire,
    layout_sha256,
    layout_size,
    payload_sha256,
    split,
    to_wire,
)
from megalang.store.files import append_jsonl


def site_config(cfg: RunConfig) -> RunConfig:
    """The site's run: RUN = run.dir/site-NAME, as many steps as the rounds ask for, checkpoints only when a round's
    global weights arrive (the site saves them itself)."""
    fed = cfg.federated
    if not fed.site:
        raise UserError("federated client needs site=NAME (the site's name; its run folder is run.dir/site-NAME)")
    if fed.strategy == "fedprox" and fed.proximal_mu > 0 and cfg.privacy.target_epsilon is not None:
        raise UserError("federated.strategy=fedprox with privacy.target_epsilon: Opacus' per-example gradients do not "
                        "include the proximal term; use federated.strategy=fedavg with DP-SGD inside a site")
    return cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"dir": str(Path(cfg.run.dir) / f"site-{fed.site}")}),
        "train": cfg.train.model_copy(update={"max_steps": fed.rounds * fed.local_steps}),
        "checkpoint": cfg.checkpoint.model_copy(update={"every": 0}),
    })


def site_context(cfg: RunConfig):
    """The site's CKKS context (with the secret key), or None in the clear; checked before the model loads."""
    fed = cfg.federated
    if fed.encryption != "ckks":
        return None
    from megalang.federated.crypto import load_context
    from megalang.federated.server import context_file

    context = load_context(context_file(fed.context, "secret.ctx"))
    if not context.has_secret:
        raise UserError(f"federated.context={fed.context}: a site needs secret.ctx (it decrypts the aggregate); "
                        "public.ctx is the server's")
    return context


class Site:
    """A site's side of the protocol, independent of Flower's classes (`run_site` adapts it)."""

    def __init__(self, cfg: RunConfig, local: LocalTrainer, context=None):
        self.cfg, self.fed, self.local, self.context = cfg, cfg.federated, local, context
        self.name = self.fed.site or "site"
        self.size = layout_size(local.layout)
        self.last_message = time.monotonic()  # when the server was last heard from

    # --- messages -------------------------------------------------------------------------------------------

    def receive(self, parameters: list[np.ndarray]) -> np.ndarray | None:
        """The accumulated global update D from the server's message (None before the first aggregation)."""
        if not parameters:
            return None
        if self.context is not None:
            from megalang.federated.crypto import decrypt

            try:
                chunks = from_wire(parameters)
            except ValueError as e:
                raise UserError(f"the server's message is not this federation's ciphertexts ({e})") from None
            accumulated = decrypt(self.context, chunks, self.size)
        else:
            accumulated = concat(parameters)
            if accumulated.size != self.size:
                raise UserError(f"the server sent {accumulated.size} values, this site trains {self.size}: the server "
                                "and the site run different recipes (lora.*, model.*)")
        if not np.isfinite(accumulated).all():
            raise UserError("the global update from the server holds non-finite values: not applied")
        return accumulated

    def send(self, update: np.ndarray) -> list[np.ndarray]:
        if self.context is not None:
            from megalang.federated.crypto import encrypt

            return to_wire(encrypt(self.context, update))
        return [a.astype(np.float32) for a in split(update, self.local.layout)]

    # --- Flower's two calls -----------------------------------------------------------------------------------

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        received, self.last_message = time.time(), time.monotonic()
        accumulated = self.receive(parameters)
        decrypt_s = time.monotonic() - self.last_message
        result = self.local.fit(accumulated, int(config["local_steps"]), float(config.get("proximal_mu", 0.0)))
        update, norm, clipped = clip(result.update, self.fed.dp_clip)
        if not np.isfinite(update).all():
            raise RuntimeError(f"site {self.name}: the round's update holds non-finite values; not sent")
        started = time.perf_counter()
        payload = self.send(update)
        encrypt_s = time.perf_counter() - started
        metrics = {"site": self.name, "layout_sha256": layout_sha256(self.local.layout),
                   "base_sha256": self.local.base_sha256, "size": self.size, "loss": result.loss,
                   "steps": result.steps, "examples": self.local.examples, "update_norm": norm, "clipped": int(clipped)}
        epsilon = self.local.epsilon()
        if epsilon is not None:
            metrics["epsilon"] = float(epsilon)
        append_jsonl(self.local.t.run.federated_log, {
            "event": "fit", "round": int(config.get("round", 0)), "time": received,
            "global_sha256": payload_sha256(parameters), "loss": result.loss, "steps": result.steps,
            "decrypt_s": round(decrypt_s, 3), "train_s": round(result.seconds, 3), "encrypt_s": round(encrypt_s, 3),
            "update_norm": norm,
            "clipped": bool(clipped), "sent_bytes": sum(a.nbytes for a in payload)})
        return payload, self.local.examples, metrics

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
        self.last_message = time.monotonic()
        accumulated = self.receive(parameters)
        decrypt_s = time.monotonic() - self.last_message
        val_loss = self.local.adopt(accumulated)
        append_jsonl(self.local.t.run.federated_log, {
            "event": "adopt", "round": int(config.get("round", 0)), "time": time.time(), "step": self.local.t.step,
            "global_sha256": payload_sha256(parameters), "decrypt_s": round(decrypt_s, 3), "val_loss": val_loss})
        if val_loss is None:
            return 0.0, 0, {"site": self.name}
        return float(val_loss), self.local.examples, {"site": self.name}


def serve_rounds(connect, site: Site, fed, log) -> None:
    """Flower's client until the server ends the federation. A server that goes away (killed, restarted) drops the
    gRPC stream, which Flower's legacy client does not retry: the site dials again, for up to round_timeout_s
    without hearing from a server, keeping its run (weights, data position) in memory meanwhile."""
    import grpc

    lost = None  # when the server was lost (reset once it is heard from again)
    while True:
        try:
            connect()
            return  # the server's shutdown message: the federation is over
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            now = time.monotonic()
            if lost is None or site.last_message > lost:
                lost = now
                log(f"federated: site {site.name} lost the server at {fed.address} ({e.details()}); dialling again")
            elif now - lost > fed.round_timeout_s:
                raise UserError(f"the federation server at {fed.address} has been unreachable for "
                                f"{fed.round_timeout_s:g} s (federated.round_timeout_s); this site's run keeps its "
                                "last global weights: restart it when the server is back") from None
            time.sleep(1.0)


def run_site(cfg: RunConfig, log=print) -> dict:
    """`megalang federated client`: train as site `federated.site` until the server ends the federation; returns
    the site run's summary (the run folder is then complete: `megalang export --run RUN` releases the global model)."""
    import flwr

    from megalang.federated.server import flower_quiet, read_pem

    cfg = site_config(cfg)
    context = site_context(cfg)
    ca = read_pem(cfg.federated.tls_ca, "federated.tls_ca") if cfg.federated.tls_ca else None
    local = LocalTrainer(cfg)
    try:
        site = Site(cfg, local, context)

        class FlowerSite(flwr.client.NumPyClient):
            def get_parameters(self, config):
                return []

            def fit(self, parameters, config):
                return site.fit(parameters, config)

            def evaluate(self, parameters, config):
                return site.evaluate(parameters, config)

        log(f"federated: site {site.name} ({local.examples} training examples, {site.size:,} trainable values) "
            f"dialling {cfg.federated.address}")
        with flower_quiet():
            serve_rounds(lambda: flwr.client.start_client(
                server_address=cfg.federated.address, client=FlowerSite().to_client(), insecure=ca is None,
                root_certificates=ca, max_wait_time=cfg.federated.round_timeout_s), site, cfg.federated, log)
        return local.finish()
    finally:
        local.close()
