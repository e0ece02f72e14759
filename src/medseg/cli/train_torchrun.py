"""``medseg train --nproc N``: the same command under ``torchrun`` (DDP on N processes)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from medseg.errors import ConfigError

__all__ = ["run_torchrun", "torchrun_command"]


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m medseg.train ARGS``.

    Args:
        nproc: processes on this machine (one per GPU; on a CPU, gloo processes).
        argv: the arguments of ``medseg train`` (``--nproc`` is removed from them).
    """
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be at least 1")
    args: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            args.append(a)
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "medseg.train",
        *args,
    ]


def run_torchrun(nproc: int, argv: Sequence[str] | None = None) -> int:
    """Run the current ``medseg train`` command line under torchrun; its exit code."""
    if argv is None:
        argv = sys.argv[1:]
        if argv and argv[0] == "train":  # `medseg train ...` (medseg-train has no sub-command)
            argv = argv[1:]
    return subprocess.call(torchrun_command(nproc, argv))
