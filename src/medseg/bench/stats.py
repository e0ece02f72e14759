"""Latency statistics and the noise-aware latency comparison used by the baseline gate.

Comparison method (:func:`compare_latency`): each side, the current run and the baseline,
is measured as R repeats of the timing loop, and each repeat is summarised by its p50 (ms
per batch). The two sides are compared by the MEDIAN of their repeat p50s. A slowdown is a
regression only when the median grows by more than ``max_regression_pct`` AND the repeat
ranges do not overlap: the fastest current repeat is slower than the slowest baseline
repeat. A real slowdown moves every repeat and fails; one noisy repeat (a cron job, a
thermal dip) cannot fail a change, because the median ignores it and the range test needs
every current repeat to be slower. The rule is conservative: a slow outlier in the
baseline widens its range and can mask a slowdown smaller than that outlier, so record
baselines with R >= 3 on an idle machine. With a single repeat on either side there is no
range to compare, and the percentage rule alone decides. A change exactly at the budget
passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError

__all__ = [
    "METHOD_MEDIAN_RANGE",
    "METHOD_PERCENTAGE",
    "LatencyComparison",
    "compare_latency",
    "percentile",
    "samples_array",
]

#: :attr:`LatencyComparison.method` when both sides have >= 2 repeats.
METHOD_MEDIAN_RANGE = "median-range"
#: :attr:`LatencyComparison.method` when either side has a single repeat.
METHOD_PERCENTAGE = "percentage"


def samples_array(samples_ms: Sequence[float], what: str = "latency samples") -> np.ndarray:
    """``samples_ms`` as a 1-D float64 array, checked: non-empty, finite and >= 0 (ms).

    Raises:
        ConfigError: naming ``what`` and the offending values.
    """
    try:
        arr = np.asarray(samples_ms, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be numbers (ms), got {samples_ms!r}") from exc
    if arr.ndim != 1 or arr.size == 0:
        raise ConfigError(f"{what} must be a non-empty sequence of ms values, got {samples_ms!r}")
    bad = arr[~np.isfinite(arr) | (arr < 0)]
    if bad.size:
        raise ConfigError(f"{what} must be finite and >= 0 ms; got {bad.tolist()[:5]}")
    return arr


def percentile(samples_ms: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples_ms`` by numpy's ``"linear"`` method."""
    if not 0.0 <= q <= 100.0:
        raise ConfigError(f"percentile q must be in [0, 100], got {q}")
    return float(np.percentile(samples_array(samples_ms), q, method="linear"))


@dataclass(frozen=True)
class LatencyComparison:
    """Outcome of :func:`compare_latency`.

    Attributes:
        current_ms: median of the current repeat p50s (ms per batch).
        baseline_ms: median of the baseline repeat p50s (ms per batch).
        change_pct: ``(current_ms - baseline_ms) / baseline_ms * 100`` (positive = slower).
        regressed: whether this is a regression by the method in the module docstring.
        method: :data:`METHOD_MEDIAN_RANGE` or :data:`METHOD_PERCENTAGE`.
        detail: one human-readable clause explaining the decision.
    """

    current_ms: float
    baseline_ms: float
    change_pct: float
    regressed: bool
    method: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        """``not regressed``."""
        return not self.regressed

    def __bool__(self) -> bool:
        return self.passed


def compare_latency(
    current: Sequence[float], baseline: Sequence[float], max_regression_pct: float
) -> LatencyComparison:
    """Compare repeat p50s of a current run with a baseline's (method: module docstring).

    Args:
        current: p50 of each repeat of the current timing loop (ms).
        baseline: p50 of each repeat of the baseline timing loop (ms).
        max_regression_pct: allowed growth of the median, in percent (>= 0).

    Raises:
        ConfigError: empty or non-finite repeats, a zero baseline, a negative budget.
    """
    if not np.isfinite(max_regression_pct) or max_regression_pct < 0:
        raise ConfigError(f"max_regression_pct must be >= 0 %, got {max_regression_pct}")
    cur = samples_array(current, "current repeat p50s")
    base = samples_array(baseline, "baseline repeat p50s")
    cur_ms, base_ms = float(np.median(cur)), float(np.median(base))
    if base_ms <= 0:
        raise ConfigError(f"baseline repeat p50s must be > 0 ms, got median {base_ms}")
    change = (cur_ms - base_ms) / base_ms * 100.0
    over = change > max_regression_pct + 1e-9  # a change exactly at the budget passes
    if cur.size < 2 or base.size < 2:
        return LatencyComparison(
            cur_ms,
            base_ms,
            change,
            over,
            METHOD_PERCENTAGE,
            f"{cur.size} vs {base.size} repeat(s): percentage rule only",
        )
    fastest, slowest = float(cur.min()), float(base.max())
    separate = fastest > slowest
    relation = (
        f"ranges do not overlap: fastest current {fastest:.2f} ms > slowest baseline "
        f"{slowest:.2f} ms"
        if separate
        else f"ranges overlap: fastest current {fastest:.2f} ms <= slowest baseline "
        f"{slowest:.2f} ms"
    )
    return LatencyComparison(
        cur_ms,
        base_ms,
        change,
        over and separate,
        METHOD_MEDIAN_RANGE,
        f"median of {cur.size} vs {base.size} repeat p50s; {relation}",
    )
