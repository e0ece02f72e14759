"""Checks of user options shared by the library and the CLI (no heavy imports).

Each check raises a one-line :class:`~medseg.errors.ConfigError` naming the option as the
user typed it (``--threads``) and what is accepted, before any heavy work starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from medseg.errors import ConfigError

__all__ = ["available_cpus", "check_not_an_input", "check_threads"]


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    """``threads`` if it is ``None`` or within 1..the cores this process may use.

    More threads than cores only slows ONNX Runtime and torch down (their spinning worker
    threads contend; a fuzz run with ``--threads 999`` did not finish in 300 s), so the
    cap is the machine's core count.

    Raises:
        ConfigError: ``threads`` below 1 or above :func:`available_cpus`.
    """
    if threads is None:
        return None
    cores = available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cores:
        raise ConfigError(
            f"{option} {threads}: accepted 1..{cores} (this machine has {cores} CPU "
            f"core{'s' if cores != 1 else ''} available)"
        )
    return threads


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_not_an_input(outputs: Iterable[tuple[str, Path]], inputs: Iterable[Path]) -> None:
    """Refuse an output path that is one of the input files (``--force`` or not).

    Args:
        outputs: ``(option, path)`` pairs, e.g. ``("--out", Path("mask.nii.gz"))``.
        inputs: the files (or folders) the command reads.

    Raises:
        ConfigError: an output resolves to an input, or lies inside an input folder.
    """
    sources = [Path(p) for p in inputs]
    for option, out in outputs:
        target = Path(out).absolute().resolve()
        for source in sources:
            resolved = source.absolute().resolve()
            if target == resolved or _same_file(target, resolved):
                raise ConfigError(
                    f"{option} {out} is the input {source}: refusing to overwrite an input "
                    "(with or without --force); choose another output path"
                )
