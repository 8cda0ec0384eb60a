"""`megalang launch`: start a multi-process run through torchrun (torch.distributed.run), on one or many nodes.

Each process runs `python -m megalang <command> …`; torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* and the
trainer joins that group. Multi-node: run the same command on every node with --nnodes and a shared
--rdzv-endpoint (docs/scaling.md has a Slurm example).
"""

from __future__ import annotations

from megalang.errors import UserError


def torchrun_args(command: list[str], nproc: int, nnodes: str = "1", rdzv_endpoint: str | None = None,
                  rdzv_id: str = "megalang", max_restarts: int = 0) -> list[str]:
    """The torch.distributed.run argument list for `python -m megalang COMMAND…` on `nproc` processes per node."""
    if nproc < 1:
        raise UserError(f"--nproc={nproc}: must be at least 1")
    if not command:
        raise UserError("megalang launch: give the command after '--', e.g. `megalang launch --nproc 2 -- train "
                        "recipe.yaml`")
    args = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}", f"--max-restarts={max_restarts}"]
    if rdzv_endpoint:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    elif nnodes not in ("1", "1:1"):
        raise UserError(f"--nnodes={nnodes} needs --rdzv-endpoint HOST:PORT (a node every node can reach)")
    else:
        args.append("--standalone")  # one node: a free local port, no endpoint to agree on
    return args + ["-m", "megalang", *command]


def launch(command: list[str], nproc: int, nnodes: str = "1", rdzv_endpoint: str | None = None,
           rdzv_id: str = "megalang", max_restarts: int = 0) -> None:
    """Run torchrun in this process (it spawns and supervises the workers); raises if a worker failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    try:
        torchrun_main(torchrun_args(command, nproc, nnodes, rdzv_endpoint, rdzv_id, max_restarts))
    except ChildFailedError as e:
        # The workers already printed their error (a UserError line, or a traceback); torchrun's own
        # traceback on top of it says nothing more. Exit with the first failed worker's code (2: user error).
        codes = [f.exitcode for f in e.failures.values() if f.exitcode]
        raise SystemExit(codes[0] if codes else 1) from None
