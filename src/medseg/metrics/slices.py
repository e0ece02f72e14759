"""Dice of whole-slice predictions against a slice set (training validation, export accuracy).

Torch-free: the predictions are label maps already (e.g. from
:func:`medseg.train.slices.predict_slice_labels` or an ONNX session).
"""

from __future__ import annotations

import numpy as np

from medseg.data.samples import SliceSet
from medseg.metrics.dice import compute_dice
from medseg.transforms.preprocessing import restore_size

__all__ = ["validation_dice"]


def validation_dice(
    predicted: np.ndarray, slices: SliceSet, classes: dict[str, int]
) -> dict[str, float]:
    """Dice per class of network-size predictions against the slices' labels, both restored
    to each slice's original size (padding removed), pooled over all validation slices.

    A class absent from both prediction and reference scores 1.0 (``empty="one"`` of
    :func:`medseg.metrics.compute_dice`)."""
    pred = np.stack(
        [
            restore_size(p, g, is_label=True)
            for p, g in zip(predicted, slices.geometries, strict=True)
        ]
    )
    ref = np.stack(
        [
            restore_size(r, g, is_label=True)
            for r, g in zip(slices.labels, slices.geometries, strict=True)
        ]
    )
    return compute_dice(pred, ref, classes, empty="one")
