"""Overlap metrics on hand-computed cases and the empty-mask policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.metrics import (
    ConfusionCounts,
    confusion_counts,
    dice,
    iou,
    precision,
    sensitivity,
    specificity,
)


def shifted_squares(side: int, shift: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Two ``side x side`` squares in a 32 x 32 image, the reference shifted by ``shift``."""
    pred = np.zeros((32, 32), dtype=bool)
    ref = np.zeros((32, 32), dtype=bool)
    pred[5 : 5 + side, 5 : 5 + side] = True
    start = [5, 5]
    start[axis] += shift
    ref[start[0] : start[0] + side, start[1] : start[1] + side] = True
    return pred, ref


@pytest.mark.parametrize("axis", [0, 1])
def test_shifted_squares_by_hand(axis: int) -> None:
    # side s = 10, shift k = 3 along one axis, 32 x 32 = 1024 voxels:
    #   TP = (s - k) * s = 70, FP = FN = k * s = 30, TN = 1024 - 130 = 894.
    #   Dice = 2 TP / (2 TP + FP + FN) = 140 / 200 = 0.7 = (s - k) / s
    #   IoU = TP / (TP + FP + FN) = 70 / 130 = 7 / 13
    #   sensitivity = precision = 70 / 100 = 0.7; specificity = 894 / (894 + 30) = 894 / 924
    pred, ref = shifted_squares(side=10, shift=3, axis=axis)
    assert confusion_counts(pred, ref) == ConfusionCounts(tp=70, fp=30, fn=30, tn=894)
    assert dice(pred, ref) == pytest.approx(0.7, abs=1e-12)
    assert iou(pred, ref) == pytest.approx(7 / 13, abs=1e-12)
    assert sensitivity(pred, ref) == pytest.approx(0.7, abs=1e-12)
    assert precision(pred, ref) == pytest.approx(0.7, abs=1e-12)
    assert specificity(pred, ref) == pytest.approx(894 / 924, abs=1e-12)


def test_asymmetric_masks_distinguish_sensitivity_from_precision() -> None:
    # ref: 4 x 4 = 16 voxels; pred: the ref's top 2 rows (8 voxels) plus 4 voxels outside.
    #   TP = 8, FP = 4, FN = 8 -> sensitivity = 8 / 16 = 0.5, precision = 8 / 12 = 2 / 3,
    #   Dice = 16 / (16 + 4 + 8) = 4 / 7, IoU = 8 / 20 = 0.4; TN = 100 - 20 = 80,
    #   specificity = 80 / 84.
    ref = np.zeros((10, 10), dtype=bool)
    ref[2:6, 2:6] = True
    pred = np.zeros((10, 10), dtype=bool)
    pred[2:4, 2:6] = True
    pred[8, 2:6] = True
    assert sensitivity(pred, ref) == pytest.approx(0.5)
    assert precision(pred, ref) == pytest.approx(2 / 3)
    assert dice(pred, ref) == pytest.approx(4 / 7)
    assert iou(pred, ref) == pytest.approx(0.4)
    assert specificity(pred, ref) == pytest.approx(80 / 84)


def test_both_empty() -> None:
    empty = np.zeros((8, 9), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert math.isnan(sensitivity(empty, empty))
    assert math.isnan(precision(empty, empty))
    assert specificity(empty, empty) == 1.0


def test_one_empty() -> None:
    empty = np.zeros((8, 9), dtype=bool)
    full = empty.copy()
    full[2:5, 3:6] = True
    # Empty prediction: nothing found, precision undefined.
    assert dice(empty, full) == 0.0
    assert iou(empty, full) == 0.0
    assert sensitivity(empty, full) == 0.0
    assert math.isnan(precision(empty, full))
    # Empty reference: sensitivity undefined, every predicted voxel is a false positive.
    assert dice(full, empty) == 0.0
    assert math.isnan(sensitivity(full, empty))
    assert precision(full, empty) == 0.0
    assert specificity(full, empty) == pytest.approx((72 - 9) / 72)


def test_specificity_undefined_when_reference_covers_everything() -> None:
    everything = np.ones((4, 4, 4), dtype=bool)
    assert math.isnan(specificity(everything, everything))
    assert dice(everything, everything) == 1.0


def test_rejects_non_bool_masks_and_shape_mismatch() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    with pytest.raises(ConfigError, match="bool"):
        dice(mask.astype(np.uint8), mask)
    with pytest.raises(ConfigError, match=r"\(4, 4\) vs \(4, 5\)"):
        dice(mask, np.zeros((4, 5), dtype=bool))
