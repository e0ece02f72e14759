"""Range checks of numbers a user gives (options, plan keys, record values), shared by every step.

One place says what a sane value is, so a ``--val-fraction 1.5``, a ``batch_size: 100000``
in ``plans.json`` or a ``--max-dice-drop nan`` is refused in one line naming the option or
key, whichever command or file it comes through. No heavy imports.
"""

from __future__ import annotations

import math

from medseg.errors import ConfigError

__all__ = ["MAX_BATCH", "check_batch", "check_number"]

#: Largest batch (slices or patches per step / per network call) accepted anywhere. A 2D
#: slice batch of 1024 at 512x512 float32 is already 1 GiB of input alone.
MAX_BATCH = 1024


def check_number(
    value: float | int | None,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    unit: str = "",
) -> None:
    """Refuse a value that is not a finite number within ``[low, high]`` (``None`` passes).

    Args:
        value: the number given.
        name: the option or key as the user wrote it (``"--val-fraction"``, ``"batch_size"``).
        low, high: the accepted bounds (``None``: unbounded on that side).
        low_open, high_open: exclude the bound itself (``(0, 1)`` for a fraction).
        unit: appended to the bounds in the message (``" mm"``).

    Raises:
        ConfigError: ``"NAME VALUE must be a finite number in (0, 1)"``, or the like.
    """
    if value is None:
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if not bad:
        number = float(value)
        bad = not math.isfinite(number)
        if low is not None:
            bad = bad or (number <= low if low_open else number < low)
        if high is not None:
            bad = bad or (number >= high if high_open else number > high)
    if bad:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        left = "(" if low_open or low is None else "["
        right = ")" if high_open or high is None else "]"
        span = f"{left}{lo}, {hi}{right}"
        raise ConfigError(f"{name} {value!r} must be a finite number in {span}{unit}")


def check_batch(value: int | None, name: str) -> None:
    """Refuse a batch size outside ``1..MAX_BATCH`` (``None`` passes)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BATCH:
        raise ConfigError(f"{name} {value!r} must be an integer in 1..{MAX_BATCH}")
