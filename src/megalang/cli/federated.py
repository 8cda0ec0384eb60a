"""`megalang federated keygen | server | client | simulate`."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from megalang.cli.app import app, out, split_recipe, user_errors
from megalang.config import RunConfig, load_config

federated_app = typer.Typer(help="Fine-tune across sites that keep their data: Flower rounds, CKKS-encrypted "
                                 "aggregation, client-level DP (docs/federated.md).", no_args_is_help=True)
app.add_typer(federated_app, name="federated")

_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
# Shorthands the docs use: `site=NAME`, `clients=N`.
_SHORT = {"site": "federated.site", "clients": "federated.clients"}
_ARGS = Annotated[Optional[list[str]], typer.Argument(help="Recipe file, then key=value overrides (federated.*, "
                                                           "data.*, lora.*, …).")]


def federated_config(args: list[str] | None) -> RunConfig:
    recipe, overrides = split_recipe(args or [])
    overrides = [_expand(o) for o in overrides]
    return load_config(RunConfig, recipe, overrides)


def _expand(override: str) -> str:
    key, sep, value = override.partition("=")
    if key in _SHORT:
        return f"{_SHORT[key]}={json.dumps(value) if key == 'site' else value}"
    return override


@federated_app.command("keygen")
@user_errors
def keygen_cmd(out_dir: Annotated[str, typer.Argument(help="New folder for secret.ctx (sites only), public.ctx "
                                                           "(the server) and context.json.")]):
    """Make the CKKS keys of a federation: give secret.ctx to every site by your own channel, public.ctx to the
    server."""
    from pathlib import Path

    from megalang.federated.crypto import keygen

    keygen(Path(out_dir))
    out.print(f"wrote {out_dir}/secret.ctx (sites only: it decrypts), {out_dir}/public.ctx (the server), "
              f"{out_dir}/context.json")


@federated_app.command("server", context_settings=_EXTRA)
@user_errors
def server_cmd(args: _ARGS = None):
    """Serve the rounds on federated.address (127.0.0.1:9092 by default); state in run.dir/server."""
    from megalang.federated.server import serve

    out.print(json.dumps(serve(federated_config(args)), indent=2))


@federated_app.command("client", context_settings=_EXTRA)
@user_errors
def client_cmd(args: _ARGS = None):
    """Train as one site (`site=NAME`) on its own data; run folder run.dir/site-NAME."""
    from megalang.federated.client import run_site

    out.print(json.dumps(run_site(federated_config(args)), indent=2))


@federated_app.command("simulate", context_settings=_EXTRA)
@user_errors
def simulate_cmd(args: _ARGS = None):
    """Server and `clients=N` sites as processes on this machine (127.0.0.1)."""
    from megalang.federated.simulate import simulate

    out.print(json.dumps(simulate(federated_config(args)), indent=2))
