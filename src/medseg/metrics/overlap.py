"""Overlap metrics of two binary masks: Dice, IoU, sensitivity, specificity, precision.

Every function takes two numpy ``bool`` masks of the same shape (any dimension), the
prediction first. Empty-mask policy (see :mod:`medseg.metrics`):

* Dice and IoU are 1.0 when both masks are empty, 0.0 when exactly one is.
* Sensitivity (recall) is NaN when the reference is empty, precision is NaN when the
  prediction is empty, specificity is NaN when the reference covers every voxel.

Only numpy is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from medseg.metrics._checks import check_masks

__all__ = [
    "ConfusionCounts",
    "confusion_counts",
    "dice",
    "iou",
    "precision",
    "sensitivity",
    "specificity",
]


def _ratio(numerator: int, denominator: int) -> float:
    return math.nan if denominator == 0 else numerator / denominator


@dataclass(frozen=True)
class ConfusionCounts:
    """Voxel counts of a prediction against a reference.

    Attributes:
        tp: voxels in both prediction and reference.
        fp: voxels in the prediction only.
        fn: voxels in the reference only.
        tn: voxels in neither.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n_pred(self) -> int:
        """Voxels in the prediction (``tp + fp``)."""
        return self.tp + self.fp

    @property
    def n_ref(self) -> int:
        """Voxels in the reference (``tp + fn``)."""
        return self.tp + self.fn

    @property
    def dice(self) -> float:
        """``2 TP / (2 TP + FP + FN)``; 1.0 when both masks are empty."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else 2 * self.tp / denominator

    @property
    def iou(self) -> float:
        """Jaccard index ``TP / (TP + FP + FN)``; 1.0 when both masks are empty."""
        denominator = self.tp + self.fp + self.fn
        return 1.0 if denominator == 0 else self.tp / denominator

    @property
    def sensitivity(self) -> float:
        """Recall ``TP / (TP + FN)``; NaN when the reference is empty."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """``TN / (TN + FP)``; NaN when the reference covers every voxel."""
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        """``TP / (TP + FP)``; NaN when the prediction is empty."""
        return _ratio(self.tp, self.tp + self.fp)


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> ConfusionCounts:
    """Count true/false positives and negatives of ``pred`` against ``ref``.

    Args:
        pred: predicted mask, bool, any shape.
        ref: reference mask, bool, same shape as ``pred``.

    Raises:
        ConfigError: not bool masks, or shapes differ.
    """
    pred, ref = check_masks(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    fp = n_pred - tp
    fn = n_ref - tp
    return ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient of two bool masks; 1.0 if both are empty, 0.0 if one is."""
    return confusion_counts(pred, ref).dice


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union (Jaccard) of two bool masks; 1.0 if both are empty."""
    return confusion_counts(pred, ref).iou


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall, true-positive rate); NaN when ``ref`` is empty."""
    return confusion_counts(pred, ref).sensitivity


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity (true-negative rate); NaN when ``ref`` covers every voxel."""
    return confusion_counts(pred, ref).specificity


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Precision (positive predictive value); NaN when ``pred`` is empty."""
    return confusion_counts(pred, ref).precision
