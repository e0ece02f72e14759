"""A training run sized to a wall-clock budget (``medseg train --time-budget 30m``).

The run first makes a few measured warm-up steps (seconds per step) and one timed validation
pass on a fixed subset of validation slices; :func:`size_run` then chooses the number of
optimisation steps, the learning-rate schedule's length and how often to validate, so that
training, validation (under :data:`VALIDATION_SHARE` of the budget, the last one always at
the end) and the final checkpoint all end inside the budget. :class:`Deadline` stops the
step loop early when the machine slows down (other work on the same cores), so the run still
ends in time.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from medseg.errors import ConfigError

__all__ = [
    "BUDGET_MARGIN",
    "VALIDATION_SHARE",
    "Deadline",
    "RunSize",
    "parse_duration",
    "size_run",
    "validation_subset_size",
]

#: Share of the budget that validation may take (the issue asks for under ~15 %).
VALIDATION_SHARE = 0.10
#: Share of the budget kept free for the final checkpoint, curve and process exit.
BUDGET_MARGIN = 0.02
#: Validation points of a run: at least 1 (the end), at most this many.
MAX_VALIDATIONS = 20
#: Warm-up: steps measured before the run is sized (the first one, with allocator and
#: thread-pool start-up, is not counted).
WARMUP_STEPS = 4
#: The warm-up also stops after this share of the budget, whatever the step count.
WARMUP_SHARE = 0.05

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$", re.IGNORECASE)
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_duration(text: str) -> float:
    """``"30m"`` -> 1800.0; ``"2h"``, ``"90s"``, ``"45"`` (seconds), ``"1.5h"``.

    Raises:
        ConfigError: not a positive number with an optional unit s, m or h.
    """
    match = _DURATION.match(str(text))
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(
            f"--time-budget {text!r} must be a positive duration such as 40s, 30m, 2h or 1.5h"
        )
    unit = (match.group(2) or "s").lower()
    return float(match.group(1)) * _UNIT[unit]


@dataclass(frozen=True)
class RunSize:
    """The plan of a budgeted run, from its measured warm-up.

    Attributes:
        total_steps: optimisation steps of the whole run (the schedule's length).
        validations: validation points (evenly spaced; the last at the last step).
        steps_between: steps between two validations.
        step_seconds: measured seconds per optimisation step.
        validation_seconds: measured seconds per validation pass (on the subset).
        budget_seconds: the budget.
    """

    total_steps: int
    validations: int
    steps_between: int
    step_seconds: float
    validation_seconds: float
    budget_seconds: float

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"time budget {self.budget_seconds:.0f} s: {self.step_seconds:.2f} s/step measured, "
            f"{self.total_steps} steps, validation every {self.steps_between} steps "
            f"({self.validations} x {self.validation_seconds:.1f} s, "
            f"{100 * self.validations * self.validation_seconds / self.budget_seconds:.0f} % "
            "of the budget)"
        )


def validation_subset_size(
    total_windows: int, seconds_per_window: float, budget_seconds: float
) -> int:
    """How many validation windows one pass may run so that a few passes stay in the share.

    Sized for at least 4 passes (or 1 when even one window is too slow) within
    :data:`VALIDATION_SHARE` of the budget; at least 1, at most ``total_windows``.
    """
    allowed = VALIDATION_SHARE * budget_seconds / 4
    return int(max(1, min(total_windows, allowed // max(seconds_per_window, 1e-6))))


def size_run(
    budget_seconds: float,
    elapsed_seconds: float,
    steps_done: int,
    step_seconds: float,
    validation_seconds: float,
) -> RunSize:
    """Steps and validation cadence that fit what is left of the budget.

    Args:
        budget_seconds: the whole budget (from the start of the run).
        elapsed_seconds: spent so far (data preparation, warm-up steps, first validation).
        steps_done: warm-up steps already made (they count towards the total).
        step_seconds: measured seconds per optimisation step.
        validation_seconds: measured seconds of one validation pass.

    Raises:
        ConfigError: the budget is spent before one more step and a validation fit.
    """
    left = budget_seconds * (1 - BUDGET_MARGIN) - elapsed_seconds
    validations = int(
        max(1, min(MAX_VALIDATIONS, VALIDATION_SHARE * budget_seconds // validation_seconds))
    )
    train_seconds = left - validations * validation_seconds
    more = int(train_seconds // step_seconds)
    if more < 1:
        raise ConfigError(
            f"--time-budget {budget_seconds:.0f} s is too short: preparing the data and the "
            f"warm-up took {elapsed_seconds:.0f} s, a step takes {step_seconds:.1f} s and a "
            f"validation {validation_seconds:.1f} s; give a longer budget"
        )
    validations = min(validations, more)
    total = steps_done + more
    between = max(1, math.ceil(more / validations))
    validations = math.ceil(more / between)
    return RunSize(total, validations, between, step_seconds, validation_seconds, budget_seconds)


class Deadline:
    """When to stop stepping: the budget minus what the end of the run still needs.

    Args:
        started: ``time.perf_counter()`` at the start of the run.
        budget_seconds: the budget.
    """

    def __init__(self, started: float, budget_seconds: float) -> None:
        self.end = started + budget_seconds * (1 - BUDGET_MARGIN)
        self.step_seconds = 0.0

    def observe_step(self, seconds: float) -> None:
        """Track the recent step time (a slower machine shortens the run, never overruns it)."""
        self.step_seconds = (
            seconds if self.step_seconds == 0 else 0.7 * self.step_seconds + 0.3 * seconds
        )

    def must_stop(self, reserve_seconds: float) -> bool:
        """True when one more step plus ``reserve_seconds`` (the last validation) would not fit."""
        return time.perf_counter() + self.step_seconds + reserve_seconds > self.end
