"""aggregate(): nan-aware statistics, counts, class and metric names as keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.metrics import (
    METRIC_NAMES,
    AggregateMetrics,
    MetricSummary,
    aggregate,
    compute_case_metrics,
    image_diagonal_mm,
)

pytest.importorskip("scipy.ndimage")

SPACING = (1.0, 2.0)
CLASSES = {"CSF": 1, "GM": 2}


def case(gm_shift: int | None, csf_pred: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """CSF: a 10 x 10 square (missing from pred unless ``csf_pred``); GM: a 10 x 10 square,
    shifted by ``gm_shift`` rows in pred, absent from both when ``gm_shift`` is None."""
    pred = np.zeros((40, 40), dtype=np.uint8)
    ref = np.zeros((40, 40), dtype=np.uint8)
    ref[2:12, 2:12] = 1
    if csf_pred:
        pred[2:12, 2:12] = 1
    if gm_shift is not None:
        ref[20:30, 20:30] = 2
        pred[20 + gm_shift : 30 + gm_shift, 20:30] = 2
    return pred, ref


def test_nan_aware_statistics_and_counts() -> None:
    # GM Dice per case: shift 0 -> 1.0, shift 2 -> 0.8, shift 5 -> 0.5, absent -> 1.0 (both
    # empty); GM sensitivity: 1.0, 0.8, 0.5, NaN (empty reference) -> 3 defined values.
    specs = [(0, True), (2, True), (5, True), (None, False)]
    cases = [compute_case_metrics(*case(s, p), CLASSES, SPACING) for s, p in specs]
    result = aggregate(cases)
    assert isinstance(result, AggregateMetrics)
    assert result.n_cases == 4
    assert list(result.classes) == ["CSF", "GM"]

    gm = result.classes["GM"].metrics
    assert gm["dice"].mean == pytest.approx((1.0 + 0.8 + 0.5 + 1.0) / 4)
    assert gm["dice"].median == pytest.approx(0.9)
    assert gm["dice"].std == pytest.approx(np.std([1.0, 0.8, 0.5, 1.0]))
    assert gm["dice"].n_defined == 4
    assert gm["sensitivity"].mean == pytest.approx((1.0 + 0.8 + 0.5) / 3)
    assert gm["sensitivity"].n_defined == 3
    # GM HD along rows (1.0 mm/row): 0, 2, 5 mm and 0 for both empty.
    assert gm["hausdorff_mm"].mean == pytest.approx((0 + 2 + 5 + 0) / 4)

    # CSF missed in the last case: one-empty surface case counted, diagonal in the stats.
    csf = result.classes["CSF"]
    assert csf.n_surface_one_empty == 1
    assert result.classes["GM"].n_surface_one_empty == 0
    diagonal = image_diagonal_mm((40, 40), SPACING)
    assert csf.metrics["hd95_mm"].mean == pytest.approx(diagonal / 4)
    assert csf.metrics["precision"].n_defined == 3

    # Mean over classes: summary of each case's class mean, keyed by metric name.
    assert set(result.mean) == set(METRIC_NAMES)
    case_means = [(1.0 + 1.0) / 2, (1.0 + 0.8) / 2, (1.0 + 0.5) / 2, (0.0 + 1.0) / 2]
    assert result.mean["dice"].mean == pytest.approx(np.mean(case_means))


def test_all_undefined_gives_nan_and_zero_count_without_warnings() -> None:
    pred, ref = case(None, csf_pred=True)
    cases = [compute_case_metrics(pred, ref, {"absent": 9}, SPACING) for _ in range(2)]
    with np.errstate(all="raise"):
        result = aggregate(cases)
    summary = result.classes["absent"].metrics["sensitivity"]
    assert math.isnan(summary.mean) and math.isnan(summary.median) and math.isnan(summary.std)
    assert summary.n_defined == 0


def test_metric_summary_of() -> None:
    summary = MetricSummary.of([1.0, math.nan, 3.0])
    assert (summary.mean, summary.std, summary.median, summary.n_defined) == (2.0, 1.0, 2.0, 2)


def test_to_dict_is_strict_json() -> None:
    cases = [compute_case_metrics(*case(s), CLASSES, SPACING) for s in (0, None)]
    data = json.loads(json.dumps(aggregate(cases).to_dict(), allow_nan=False))
    assert data["n_cases"] == 2
    assert data["classes"]["GM"]["metrics"]["sensitivity"]["n_defined"] == 1
    assert data["classes"]["CSF"]["n_surface_one_empty"] == 0


def test_classes_in_a_different_order_are_matched_by_name() -> None:
    pred, ref = case(2)
    a = compute_case_metrics(pred, ref, {"CSF": 1, "GM": 2}, SPACING)
    b = compute_case_metrics(pred, ref, {"GM": 2, "CSF": 1}, SPACING)
    result = aggregate([a, b])
    assert result.classes["GM"].metrics["dice"].mean == pytest.approx(0.8)
    assert result.classes["GM"].metrics["dice"].std == pytest.approx(0.0)


def test_bad_input_raises_config_error() -> None:
    pred, ref = case(0)
    with pytest.raises(ConfigError, match="no cases"):
        aggregate([])
    a = compute_case_metrics(pred, ref, {"CSF": 1}, SPACING)
    b = compute_case_metrics(pred, ref, {"GM": 2}, SPACING)
    with pytest.raises(ConfigError, match=r"\['GM'\].*\['CSF'\]"):
        aggregate([a, b])
    with pytest.raises(ConfigError, match="dict"):
        aggregate([a.to_dict()])  # type: ignore[list-item]
