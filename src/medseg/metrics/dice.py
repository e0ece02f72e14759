"""Dice of label maps: one functional API and one accumulator, used everywhere Dice is shown.

The shape of MONAI's ``compute_dice`` / ``DiceMetric.aggregate()``: :func:`compute_dice`
scores one pair of label maps; :class:`DiceAccumulator` adds up the confusion counts of many
pairs (slices, batches, cases) and :meth:`DiceAccumulator.pooled_dice` gives the Dice of the
pooled counts (a voxel-weighted Dice over the whole set, not a mean of per-slice Dice).
Training validation, the export accuracy and its INT8 guard, ``medseg bench`` and
``medseg infer --reference`` all go through them.

Empty-mask policy, the ``empty`` parameter (one class whose prediction and reference both
have no voxel, in the pair or in the pooled counts):

* ``"one"``: Dice 1.0 (nothing to find, nothing found), the :mod:`medseg.metrics` default;
  training validation and the export record this in ``medseg.json``.
* ``"nan"``: undefined, NaN, left out of :meth:`DiceAccumulator.mean` (as MONAI's
  ``ignore_empty``); ``medseg bench`` writes it as ``null`` and ``medseg infer`` as ``n/a``.

Exactly one empty mask is Dice 0.0 under both policies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

from medseg.errors import ConfigError
from medseg.metrics._checks import check_label_maps
from medseg.metrics.overlap import ConfusionCounts

__all__ = [
    "EMPTY_POLICIES",
    "DiceAccumulator",
    "EmptyPolicy",
    "compute_confusion",
    "compute_dice",
    "dice_of_counts",
]

EmptyPolicy = Literal["one", "nan"]
#: Accepted values of ``empty`` (see the module docstring).
EMPTY_POLICIES: tuple[EmptyPolicy, ...] = ("one", "nan")


def _check_policy(empty: str) -> None:
    if empty not in EMPTY_POLICIES:
        raise ConfigError(f"empty-mask policy {empty!r}: accepted {', '.join(EMPTY_POLICIES)}")


def dice_of_counts(counts: ConfusionCounts, empty: EmptyPolicy = "one") -> float:
    """``2 TP / (2 TP + FP + FN)``; both masks empty: 1.0 (``"one"``) or NaN (``"nan"``)."""
    _check_policy(empty)
    denominator = 2 * counts.tp + counts.fp + counts.fn
    if denominator == 0:
        return 1.0 if empty == "one" else math.nan
    return 2 * counts.tp / denominator


def compute_confusion(
    pred: np.ndarray, ref: np.ndarray, classes: Mapping[str, int]
) -> dict[str, ConfusionCounts]:
    """Confusion counts per class of two integer label maps of the same shape (2D or 3D).

    Args:
        pred: predicted class indices, ``(H, W)``, ``(X, Y, Z)`` or stacked slices ``(N, H, W)``.
        ref: reference class indices, same shape.
        classes: class name -> label value; only these classes are counted.

    Raises:
        ConfigError: not integer label maps, or shapes differ.
    """
    pred, ref = check_label_maps(pred, ref)
    out = {}
    for name, value in classes.items():
        p, r = pred == value, ref == value
        tp = int(np.count_nonzero(p & r))
        fp, fn = int(np.count_nonzero(p)) - tp, int(np.count_nonzero(r)) - tp
        out[name] = ConfusionCounts(tp=tp, fp=fp, fn=fn, tn=int(p.size) - tp - fp - fn)
    return out


def compute_dice(
    pred: np.ndarray, ref: np.ndarray, classes: Mapping[str, int], empty: EmptyPolicy = "one"
) -> dict[str, float]:
    """Dice per class of two integer label maps (see the module docstring for ``empty``)."""
    _check_policy(empty)
    return {n: dice_of_counts(c, empty) for n, c in compute_confusion(pred, ref, classes).items()}


class DiceAccumulator:
    """Confusion counts per class summed over many label-map pairs; Dice of the pooled counts.

    Args:
        classes: class name -> label value (usually the foreground classes).
        empty: empty-mask policy of :meth:`pooled_dice` (``"one"`` or ``"nan"``).

    Example:
        >>> acc = DiceAccumulator({"GM": 2}, empty="nan")
        >>> for pred, ref in pairs:        # doctest: +SKIP
        ...     acc.update(pred, ref)
        >>> acc.pooled_dice()              # doctest: +SKIP
        {'GM': 0.93}
    """

    def __init__(self, classes: Mapping[str, int], empty: EmptyPolicy = "one") -> None:
        _check_policy(empty)
        self.classes = dict(classes)
        self.empty: EmptyPolicy = empty
        self._counts = {n: np.zeros(4, dtype=np.int64) for n in self.classes}  # tp fp fn tn

    def update(self, pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """Add one pair; returns that pair's own Dice per class (same policy)."""
        counts = compute_confusion(pred, ref, self.classes)
        for name, c in counts.items():
            self._counts[name] += (c.tp, c.fp, c.fn, c.tn)
        return {n: dice_of_counts(c, self.empty) for n, c in counts.items()}

    @property
    def counts(self) -> dict[str, ConfusionCounts]:
        """The pooled counts per class."""
        return {
            n: ConfusionCounts(tp=int(c[0]), fp=int(c[1]), fn=int(c[2]), tn=int(c[3]))
            for n, c in self._counts.items()
        }

    def pooled_dice(self) -> dict[str, float]:
        """Dice per class of the pooled counts (voxel-weighted over every pair added; MONAI's
        ``DiceMetric.aggregate()`` averages per-case Dice instead)."""
        return {n: dice_of_counts(c, self.empty) for n, c in self.counts.items()}

    def mean(self) -> float:
        """Mean of :meth:`pooled_dice` over the classes, NaN values left out (NaN if all are)."""
        values = [v for v in self.pooled_dice().values() if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def sensitivity(self) -> dict[str, float]:
        """Pooled sensitivity per class (NaN when the class is absent from every reference)."""
        return {n: c.sensitivity for n, c in self.counts.items()}

    def specificity(self) -> dict[str, float]:
        """Pooled specificity per class (NaN when the class covers every reference voxel)."""
        return {n: c.specificity for n, c in self.counts.items()}
