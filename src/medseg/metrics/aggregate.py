"""Aggregation of per-case metrics over a data set, keyed by class and metric names.

Undefined values (NaN: sensitivity with an empty reference, and so on) are left out of
every statistic, and each statistic says how many values it used (``n_defined``). Surface
distances of cases where exactly one mask was empty hold the policy value (the image
diagonal) and are counted in the statistics; ``n_surface_one_empty`` says how many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from medseg.errors import ConfigError
from medseg.metrics._checks import json_float, nan_summary
from medseg.metrics.case import METRIC_NAMES, CaseMetrics

__all__ = ["AggregateMetrics", "ClassSummary", "MetricSummary", "aggregate"]


@dataclass(frozen=True)
class MetricSummary:
    """Statistics of one metric over cases, NaN values left out.

    Attributes:
        mean: mean of the defined values (NaN if none).
        std: population standard deviation (``ddof=0``) of the defined values (NaN if none).
        median: median of the defined values (NaN if none).
        n_defined: number of defined (non-NaN) values.
    """

    mean: float
    std: float
    median: float
    n_defined: int

    @classmethod
    def of(cls, values: Sequence[float]) -> MetricSummary:
        """Summarise ``values`` (NaN = undefined)."""
        mean, std, median, n_defined = nan_summary(values)
        return cls(mean=mean, std=std, median=median, n_defined=n_defined)

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-ready dict; NaN becomes ``None``."""
        return {
            "mean": json_float(self.mean),
            "std": json_float(self.std),
            "median": json_float(self.median),
            "n_defined": self.n_defined,
        }


@dataclass(frozen=True)
class ClassSummary:
    """Statistics of every metric of one class over cases.

    Attributes:
        metrics: metric name (:data:`~medseg.metrics.METRIC_NAMES`) -> summary.
        n_surface_one_empty: cases where exactly one of prediction and reference was empty,
            so the surface distances hold the image diagonal.
    """

    metrics: Mapping[str, MetricSummary]
    n_surface_one_empty: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "metrics": {name: summary.to_dict() for name, summary in self.metrics.items()},
            "n_surface_one_empty": self.n_surface_one_empty,
        }


@dataclass(frozen=True)
class AggregateMetrics:
    """Metrics of a data set.

    Attributes:
        n_cases: number of cases aggregated.
        classes: class name -> :class:`ClassSummary`.
        mean: metric name -> summary over cases of each case's mean over classes
            (:attr:`CaseMetrics.mean`).
    """

    n_cases: int
    classes: Mapping[str, ClassSummary]
    mean: Mapping[str, MetricSummary]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes ``None``."""
        return {
            "n_cases": self.n_cases,
            "classes": {name: summary.to_dict() for name, summary in self.classes.items()},
            "mean": {name: summary.to_dict() for name, summary in self.mean.items()},
        }


def aggregate(cases: Sequence[CaseMetrics]) -> AggregateMetrics:
    """Aggregate per-case metrics: per class and metric mean, std, median and counts.

    Args:
        cases: results of :func:`~medseg.metrics.compute_case_metrics`, all with the same
            class names (in any order; the output follows the first case's order).

    Raises:
        ConfigError: no cases, an item that is not a :class:`CaseMetrics`, or class names
            that differ between cases.
    """
    if len(cases) == 0:
        raise ConfigError("aggregate() received no cases; give at least one CaseMetrics")
    for index, case in enumerate(cases):
        if not isinstance(case, CaseMetrics):
            raise ConfigError(
                f"cases[{index}] is a {type(case).__name__}; aggregate() accepts CaseMetrics "
                f"from compute_case_metrics()"
            )
    names = list(cases[0].classes)
    for index, case in enumerate(cases):
        if set(case.classes) != set(names):
            raise ConfigError(
                f"cases[{index}] has classes {sorted(case.classes)} but cases[0] has "
                f"{sorted(names)}; every case must have the same class names"
            )

    classes = {
        name: ClassSummary(
            metrics=MappingProxyType(
                {
                    metric: MetricSummary.of([getattr(c.classes[name], metric) for c in cases])
                    for metric in METRIC_NAMES
                }
            ),
            n_surface_one_empty=sum(c.classes[name].surface_one_empty for c in cases),
        )
        for name in names
    }
    mean = {metric: MetricSummary.of([c.mean[metric] for c in cases]) for metric in METRIC_NAMES}
    return AggregateMetrics(
        n_cases=len(cases), classes=MappingProxyType(classes), mean=MappingProxyType(mean)
    )
