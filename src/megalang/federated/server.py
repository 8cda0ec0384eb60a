"""`megalang federated server`: Flower's gRPC server with megalang's strategy (federated/strategy.py). It never
holds a site's data, and under `encryption=ckks` it holds only the public context: it cannot decrypt a site's update
or the aggregate. It checkpoints after every round and, restarted, resumes from the newest round.

Flower's `start_server`/`start_client` (the gRPC transport of Flower's legacy API, marked deprecated since 1.13 and
shipped in 1.42) run the rounds: they need no SuperLink/SuperNode deployment or app packaging, which suits a
command a security team starts on two machines. Flower's deprecation banners are filtered from the log.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

from megalang.config import RunConfig
from megalang.errors import UserError
from megalang.federated.state import epsilon, load_state
from megalang.store.files import write_json_atomic
from megalang.store.run_dir import ServerDir


class _NoDeprecationBanner(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "deprecated" not in record.getMessage().lower()


@contextlib.contextmanager
def flower_quiet() -> Iterator[None]:
    """Flower's own log without its deprecation banners for the legacy entry points."""
    logger = logging.getLogger("flwr")
    banner = _NoDeprecationBanner()
    logger.addFilter(banner)
    try:
        yield
    finally:
        logger.removeFilter(banner)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"federated.address={address!r}: expected HOST:PORT, e.g. 127.0.0.1:9092")
    return host.strip("[]"), int(port)


def check_free(address: str) -> None:
    """A server address already in use fails here in one line, not deep inside gRPC."""
    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"federated.address={address}: cannot listen there ({e.strerror}); choose another port "
                            "or stop the process that holds it") from None


def context_file(path: str | None, name: str) -> str:
    """federated.context may name a `megalang federated keygen` folder: the server reads its public.ctx, a site
    its secret.ctx (a folder holding only public.ctx is what the server's machine should have)."""
    if not path:
        raise UserError(f"federated.encryption=ckks needs federated.context: the keygen folder or its {name} "
                        "(`megalang federated keygen KEYS` makes them)")
    return str(Path(path) / name) if Path(path).is_dir() else path


def read_pem(path: str, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{key}={path}: cannot read it ({e.strerror})") from None
    if b"-----BEGIN " not in data:
        raise UserError(f"{key}={path} is not a PEM file (-----BEGIN …-----): give the PEM certificate or key")
    return data


def tls_files(cfg: RunConfig) -> tuple[bytes, bytes, bytes] | None:
    """(CA, certificate, key) for Flower's TLS server, or None: gRPC in the clear, which the log says when the
    address is not the loopback."""
    fed = cfg.federated
    given = [fed.tls_ca, fed.tls_cert, fed.tls_key]
    if not any(given):
        if split_address(fed.address)[0] not in ("127.0.0.1", "localhost", "::1"):
            print(f"federated: warning: {fed.address} is served without TLS: updates (ciphertexts under "
                  "encryption=ckks) and metrics cross the network in the clear; set federated.tls_*", flush=True)
        return None
    if not all(given):
        raise UserError("the server's TLS needs federated.tls_ca, federated.tls_cert and federated.tls_key together")
    return (read_pem(fed.tls_ca, "federated.tls_ca"), read_pem(fed.tls_cert, "federated.tls_cert"),
            read_pem(fed.tls_key, "federated.tls_key"))


def server_context(cfg: RunConfig):
    """The public CKKS context (None in the clear); a context holding the secret key is refused."""
    fed = cfg.federated
    if fed.encryption != "ckks":
        return None
    from megalang.federated.crypto import load_context

    context = load_context(context_file(fed.context, "public.ctx"))
    if context.has_secret:
        raise UserError(f"federated.context={fed.context} holds the secret key: the server must not; give it "
                        "public.ctx from the same `megalang federated keygen` folder")
    return context


def serve(cfg: RunConfig, log=print, abort=None) -> dict:
    """Run (or resume) the federation's rounds; returns the summary written to SERVER/summary.json. `abort`: () ->
    a reason to stop waiting for sites (simulate: its sites exited), or None."""
    import flwr

    from megalang.federated.strategy import FederatedStrategy

    fed = cfg.federated
    server_dir = ServerDir(Path(cfg.run.dir) / "server")
    context = server_context(cfg)
    state = load_state(server_dir, fed, context.sha256 if context else None)
    remaining = fed.rounds - state.round
    if state.round:
        log(f"federated: resuming {server_dir.root} after round {state.round} of {fed.rounds}")
    if remaining > 0:
        check_free(fed.address)
        server_dir.root.mkdir(parents=True, exist_ok=True)
        strategy = FederatedStrategy(fed, state, server_dir, context, log, abort)
        log(f"federated: server on {fed.address}, {remaining} rounds, waiting for {fed.clients or fed.min_clients} "
            f"sites (encryption={fed.encryption})")
        with flower_quiet():
            flwr.server.start_server(server_address=fed.address, strategy=strategy, certificates=tls_files(cfg),
                                     config=flwr.server.ServerConfig(num_rounds=remaining,
                                                                     round_timeout=fed.round_timeout_s))
    summary = {"rounds": state.round, "encryption": fed.encryption, "strategy": fed.strategy,
               "pins": {k: v for k, v in state.pins.items() if k != "shapes"},
               "server_dir": str(server_dir.root.resolve())}
    if state.dp_history:
        summary.update(epsilon=epsilon(state.dp_history, fed.dp_delta), delta=fed.dp_delta,
                       noise_multiplier=fed.dp_noise, clip=fed.dp_clip)
    server_dir.root.mkdir(parents=True, exist_ok=True)
    write_json_atomic(server_dir.summary, summary)
    return summary
