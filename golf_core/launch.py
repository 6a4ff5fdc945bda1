"""``golf train STACK --nproc N``: start the run under torchrun, one process per GPU.

The launcher runs ``torchrun --standalone --nproc_per_node N -m golf_core STACK <options>``
(``python -m torch.distributed.run``, the program behind the ``torchrun`` script, with this
interpreter, so the workers use the same environment) and returns torchrun's exit status.
Every worker is an ordinary ``golf train`` whose ``RANK``/``WORLD_SIZE`` make the trainer
distributed: NCCL on CUDA, gloo on CPU; rank 0 logs and writes the artifact. Plain
``torchrun --nproc_per_node N -m golf_core STACK`` is the same run.

Several machines: ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint`` and ``--rdzv-id`` are passed to
torchrun (c10d rendezvous) in place of ``--standalone``; run the same command on every node with
its own ``--node-rank``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from golf_core.errors import GolfError


@dataclass(frozen=True)
class Nodes:
    """torchrun's multi-node settings; all ``None`` = one machine (``--standalone``)."""

    nnodes: str | None = None  # "2", or "MIN:MAX" for an elastic job
    node_rank: int | None = None
    rdzv_endpoint: str | None = None  # "host:port" of the rendezvous (node 0's address)
    rdzv_id: str | None = None

    @property
    def multi_node(self) -> bool:
        return any(v is not None for v in (self.nnodes, self.node_rank, self.rdzv_endpoint, self.rdzv_id))


def torchrun_options(nproc: int, nodes: Nodes = Nodes()) -> list[str]:
    """torchrun's own options for ``nproc`` processes per node on ``nodes``."""
    if nproc < 1:
        raise GolfError(f"--nproc {nproc}: need at least one process per node")
    if not nodes.multi_node:
        return ["--standalone", f"--nproc_per_node={nproc}"]
    if nodes.rdzv_endpoint is None:
        raise GolfError("a multi-node run needs --rdzv-endpoint HOST:PORT (the address every node can reach, e.g. node 0's)")
    if nodes.nnodes is None:
        raise GolfError("a multi-node run needs --nnodes (the number of machines, or MIN:MAX)")
    opts = [f"--nnodes={nodes.nnodes}", f"--nproc_per_node={nproc}", "--rdzv_backend=c10d", f"--rdzv_endpoint={nodes.rdzv_endpoint}"]
    if nodes.node_rank is not None:
        opts.append(f"--node_rank={nodes.node_rank}")
    if nodes.rdzv_id is not None:
        opts.append(f"--rdzv_id={nodes.rdzv_id}")
    return opts


def train_arguments(
    stack_path: str | Path,
    *,
    overrides: Sequence[str] = (),
    enable: Sequence[str] = (),
    disable: Sequence[str] = (),
    seed: int | None = None,
    run_dir: str | Path | None = None,
) -> list[str]:
    """The ``golf train`` arguments that reproduce these options in every worker."""
    args = [str(stack_path)]
    for value in overrides:
        args += ["--set", value]
    for name in enable:
        args += ["--enable", name]
    for name in disable:
        args += ["--disable", name]
    if seed is not None:
        args += ["--seed", str(seed)]
    if run_dir is not None:
        args += ["--run-dir", str(run_dir)]
    return args


def torchrun_command(
    nproc: int, train_args: Sequence[str], nodes: Nodes = Nodes(), *, plugins_dirs: Sequence[str | Path] = (), python: str | None = None
) -> list[str]:
    """The full command line: ``python -m torch.distributed.run <options> -m golf_core <train_args>``.

    ``--plugins-dir`` is an option of the ``golf`` group, which ``-m golf_core`` (``golf train``
    with the arguments appended) cannot take; with plugin directories the workers run the same
    command through the CLI module instead: ``-m cli --plugins-dir DIR train <train_args>``.
    """
    head = [python or sys.executable, "-m", "torch.distributed.run", *torchrun_options(nproc, nodes)]
    if not plugins_dirs:
        return [*head, "-m", "golf_core", *train_args]
    group = [arg for d in plugins_dirs for arg in ("--plugins-dir", str(d))]
    return [*head, "-m", "cli", *group, "train", *train_args]


def launch(command: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Run ``command`` (from :func:`torchrun_command`) and return its exit status (128 + N for signal N)."""
    if "RANK" in os.environ and "LOCAL_RANK" in os.environ:
        raise GolfError("--nproc inside a torchrun worker (RANK is set): run `golf train STACK` without --nproc there")
    try:
        proc = subprocess.run(list(command), env=env)
    except FileNotFoundError as err:
        raise GolfError(f"cannot start {command[0]}: {err.strerror}; is torch installed in this environment?") from None
    except KeyboardInterrupt:  # torchrun got the same SIGINT and stops its workers
        return 128 + signal.SIGINT
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


__all__ = ["Nodes", "launch", "torchrun_command", "torchrun_options", "train_arguments"]
