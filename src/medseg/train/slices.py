"""Whole-slice prediction of a torch model (the whole-slice geometry's validation; export checks).

:func:`predict_slice_labels` runs a torch model on whole network-size slices and returns
argmax labels; the runtime's :func:`medseg.runtime.sliding_window.predict_slices` is the
other thing (class probabilities of a backend through the sliding window).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["predict_slice_labels"]


def predict_slice_labels(
    model: Any, images: np.ndarray, device: Any, batch_size: int = 8
) -> np.ndarray:
    """Argmax labels ``(N, H, W)`` uint8 of a torch model on ``(N, C, H, W)`` whole slices."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            out.append(model(batch).argmax(dim=1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)
