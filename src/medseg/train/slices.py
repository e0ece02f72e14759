"""Whole-slice prediction and Dice (the whole-slice geometry's validation; export checks)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.data.samples import SliceSet
from medseg.transforms.preprocessing import restore_size

__all__ = ["predict_slices", "validation_dice"]


def predict_slices(model: Any, images: np.ndarray, device: Any, batch_size: int = 8) -> np.ndarray:
    """Argmax labels ``(N, H, W)`` uint8 of a model on ``(N, C, H, W)`` network-size slices."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            out.append(model(batch).argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def validation_dice(
    predicted: np.ndarray, slices: SliceSet, classes: dict[str, int]
) -> dict[str, float]:
    """Dice per class of network-size predictions against the slices' labels, both restored
    to each slice's original size (padding removed), pooled over all validation slices.

    A class absent from both prediction and reference scores 1.0 (``empty="one"`` of
    :func:`medseg.metrics.compute_dice`)."""
    from medseg.metrics import compute_dice

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
