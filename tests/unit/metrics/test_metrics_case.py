"""compute_case_metrics: per-class values keyed by name, volumes, policy, validation."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.metrics import METRIC_NAMES, CaseMetrics, compute_case_metrics, image_diagonal_mm

pytest.importorskip("scipy.ndimage")

SPACING = (1.0, 1.0, 2.5)  # one voxel = 2.5 mm^3 = 0.0025 ml


def two_class_case() -> tuple[np.ndarray, np.ndarray]:
    """Label 1: pred cube side 6, ref cube side 4 inside it; label 2: identical bars."""
    pred = np.zeros((16, 16, 16), dtype=np.int16)
    ref = np.zeros((16, 16, 16), dtype=np.int16)
    pred[2:8, 2:8, 2:8] = 1
    ref[3:7, 3:7, 3:7] = 1
    pred[10:14, 10:12, 4:12] = 2
    ref[10:14, 10:12, 4:12] = 2
    return pred, ref


def test_per_class_values_and_volume_difference_in_ml() -> None:
    pred, ref = two_class_case()
    result = compute_case_metrics(pred, ref, {"tumour": 1, "bar": 2}, SPACING)
    assert list(result.classes) == ["tumour", "bar"]

    tumour = result.classes["tumour"]
    # pred 6^3 = 216 voxels = 0.54 ml, ref 4^3 = 64 voxels = 0.16 ml (0.0025 ml/voxel):
    # difference 152 voxels = +0.38 ml = +237.5 % of the reference.
    assert tumour.volume_pred_ml == pytest.approx(0.54)
    assert tumour.volume_ref_ml == pytest.approx(0.16)
    assert tumour.volume_diff_ml == pytest.approx(0.38)
    assert tumour.volume_diff_pct == pytest.approx(237.5)
    # ref inside pred: TP = 64, FP = 152, FN = 0 -> Dice = 128 / 280, sensitivity 1,
    # precision 64 / 216.
    assert tumour.dice == pytest.approx(128 / 280)
    assert tumour.iou == pytest.approx(64 / 216)
    assert tumour.sensitivity == 1.0
    assert tumour.precision == pytest.approx(64 / 216)
    # The pred cube's lowest slab is one slice (2.5 mm) below the ref's; corners are
    # sqrt(1 + 1 + 2.5^2) mm from the nearest ref surface voxel.
    assert tumour.hausdorff_mm == pytest.approx(math.sqrt(1 + 1 + 2.5**2))
    assert not tumour.surface_one_empty

    bar = result.classes["bar"]
    assert (bar.dice, bar.iou, bar.hausdorff_mm, bar.volume_diff_ml) == (1.0, 1.0, 0.0, 0.0)

    # The mean over classes is keyed by metric name.
    assert set(result.mean) == set(METRIC_NAMES)
    assert result.mean["dice"] == pytest.approx((128 / 280 + 1.0) / 2)


def test_class_names_follow_label_values() -> None:
    pred, ref = two_class_case()
    swapped = compute_case_metrics(pred, ref, {"bar": 2, "tumour": 1}, SPACING)
    assert swapped.classes["bar"].dice == 1.0
    assert swapped.classes["tumour"].dice == pytest.approx(128 / 280)


def test_empty_policy_in_case_metrics() -> None:
    pred, ref = two_class_case()
    pred[pred == 2] = 0  # class 2 missed entirely
    result = compute_case_metrics(pred, ref, {"tumour": 1, "bar": 2, "absent": 7}, SPACING)

    missed = result.classes["bar"]
    diagonal = image_diagonal_mm((16, 16, 16), SPACING)
    assert missed.dice == 0.0 and missed.iou == 0.0
    assert missed.hausdorff_mm == missed.hd95_mm == missed.assd_mm == pytest.approx(diagonal)
    assert missed.surface_one_empty
    assert missed.sensitivity == 0.0 and math.isnan(missed.precision)
    assert missed.volume_diff_pct == pytest.approx(-100.0)

    absent = result.classes["absent"]
    assert (absent.dice, absent.iou) == (1.0, 1.0)
    assert (absent.hausdorff_mm, absent.hd95_mm, absent.assd_mm) == (0.0, 0.0, 0.0)
    assert absent.volume_diff_ml == 0.0
    assert math.isnan(absent.sensitivity) and math.isnan(absent.precision)
    assert math.isnan(absent.volume_diff_pct)
    assert not absent.surface_one_empty

    # Mean over classes leaves NaN out: precision is defined for "tumour" only.
    assert result.mean["precision"] == pytest.approx(64 / 216)


def test_without_surface_metrics_they_are_nan() -> None:
    pred, ref = two_class_case()
    result = compute_case_metrics(pred, ref, {"tumour": 1}, SPACING, include_surface=False)
    tumour = result.classes["tumour"]
    assert math.isnan(tumour.hausdorff_mm) and math.isnan(tumour.assd_mm)
    assert math.isnan(result.mean["hd95_mm"])
    assert tumour.dice == pytest.approx(128 / 280)


def test_to_dict_is_strict_json_with_null_for_undefined() -> None:
    pred, ref = two_class_case()
    result = compute_case_metrics(pred, ref, {"tumour": 1, "absent": 7}, SPACING)
    text = json.dumps(result.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["classes"]["absent"]["sensitivity"] is None
    assert data["classes"]["tumour"]["dice"] == pytest.approx(128 / 280)
    assert data["spacing_mm"] == [1.0, 1.0, 2.5]


def test_results_are_frozen() -> None:
    pred, ref = two_class_case()
    result = compute_case_metrics(pred, ref, {"tumour": 1}, SPACING)
    assert isinstance(result, CaseMetrics)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.classes["tumour"].dice = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.classes["other"] = result.classes["tumour"]  # type: ignore[index]


def test_2d_label_maps() -> None:
    pred = np.zeros((32, 32), dtype=np.uint8)
    ref = np.zeros((32, 32), dtype=np.uint8)
    pred[5:15, 5:15] = 3
    ref[8:18, 5:15] = 3
    result = compute_case_metrics(pred, ref, {"GM": 3}, (0.5, 2.0))
    assert result.classes["GM"].dice == pytest.approx(0.7)
    assert result.classes["GM"].hausdorff_mm == pytest.approx(1.5)
    assert result.classes["GM"].volume_ref_ml == pytest.approx(100 * 1.0 / 1000)


@pytest.mark.parametrize(
    ("pred", "ref", "spacing", "match"),
    [
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int), (1, 1, 1), r"\(4, 4, 5\)"),
        (np.zeros((4, 4, 4), float), np.zeros((4, 4, 4), int), (1, 1, 1), "float64.*integer"),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), (1, 1), "3 values"),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), (1, -1, 1), "positive"),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), (1, 1, math.inf), "finite"),
        (np.zeros((4, 4, 4), int), np.zeros((4, 4, 4), int), "1,1,1", "not a sequence"),
        (np.zeros(4, int), np.zeros(4, int), (1,), "2D or 3D"),
    ],
)
def test_bad_input_raises_config_error(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple, match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        compute_case_metrics(pred, ref, {"a": 1}, spacing)


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ({}, "non-empty mapping"),
        ({"a": 1.0}, "must be an integer"),
        ({"a": 1, "b": 1}, "reuses label value 1"),
        ({"": 1}, "non-empty string"),
    ],
)
def test_bad_classes_raise_config_error(classes: dict, match: str) -> None:
    labels = np.zeros((4, 4), dtype=np.int32)
    with pytest.raises(ConfigError, match=match):
        compute_case_metrics(labels, labels, classes, (1.0, 1.0))
