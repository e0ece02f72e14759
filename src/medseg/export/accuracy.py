"""Accuracy of an exported precision on the validation split, measured with ONNX Runtime.

Dice per class on whole validation slices at their original size (padding removed),
pooled over the split; the Dice drop against FP32 in points (x100); argmax agreement
with FP32 over every validation pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.samples import SliceSet
from medseg.export.ort import run_onnx

__all__ = ["Accuracy", "evaluate_onnx"]


@dataclass(frozen=True)
class Accuracy:
    """Validation accuracy of one precision.

    Attributes:
        dice_per_class: class name -> Dice in [0, 1].
        dice_mean: mean over the classes.
        dice_drop_pts: FP32 mean Dice minus this one, in points (x100); 0 for FP32 itself.
        argmax_agreement: share of validation pixels whose class equals FP32's.
        predictions: ``(N, H, W)`` uint8 network-size labels (not serialised).
    """

    dice_per_class: dict[str, float]
    dice_mean: float
    dice_drop_pts: float
    argmax_agreement: float
    predictions: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "dice_mean": self.dice_mean,
            "dice_per_class": self.dice_per_class,
            "dice_drop_pts": self.dice_drop_pts,
            "argmax_agreement": self.argmax_agreement,
        }


def evaluate_onnx(
    path: Path,
    val: SliceSet,
    classes: dict[str, int],
    reference: Accuracy | None = None,
    batch_size: int = 8,
) -> Accuracy:
    """Run ``path`` on the validation slices and score it (``reference``: the FP32 result)."""
    from medseg.train.loop import validation_dice

    predictions = run_onnx(path, val.images, batch_size).argmax(axis=1).astype(np.uint8)
    dice = validation_dice(predictions, val, classes)
    mean = float(np.mean(list(dice.values())))
    if reference is None:
        return Accuracy(dice, mean, 0.0, 1.0, predictions)
    drop = 100.0 * (reference.dice_mean - mean)
    agreement = float(np.mean(predictions == reference.predictions))
    return Accuracy(dice, mean, drop, agreement, predictions)
