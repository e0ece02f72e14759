"""Cross-check against MONAI on random blobs with anisotropic spacing (2D and 3D).

MONAI's semantics (monai/metrics, 1.6): surfaces are ``mask ^ binary_erosion(mask)`` on the
bounding box of both masks plus a 1-voxel margin; ``compute_hausdorff_distance`` takes the
max over both directions of the max (or ``torch.quantile`` of the ``percentile``) of the
directed distances; ``compute_average_surface_distance(symmetric=True)`` takes the mean of
both directions concatenated; distances are float32. Inputs are one-hot ``(B, C, ...)``;
``include_background=True`` keeps our single channel.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medseg.metrics import confusion_counts, surface_distances

ndimage = pytest.importorskip("scipy.ndimage")
monai_metrics = pytest.importorskip("monai.metrics")
torch = pytest.importorskip("torch")

RTOL = 1e-5

# MONAI 1.6 warns about its own deprecated argument inside get_mask_edges.
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

CASES = [
    # (shape, spacing, seed)
    ((64, 80), (0.7, 1.9), 0),
    ((72, 56), (2.5, 0.6), 1),
    ((40, 48, 36), (1.2, 0.8, 2.5), 2),
    ((32, 40, 28), (0.5, 0.5, 3.0), 3),
]


def blob_pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference blob (thresholded smoothed noise) and a perturbed prediction of it."""
    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=4.0)
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    base /= base.std()
    noise /= noise.std()
    ref = base > 0.5
    pred = (base + 0.4 * noise) > 0.6
    assert ref.any() and pred.any() and (pred != ref).any()
    return pred, ref


def one_hot(mask: np.ndarray) -> Any:
    """``(1, 1, *mask.shape)`` float32 tensor, the one-hot layout MONAI expects."""
    return torch.from_numpy(mask.astype(np.float32))[None, None]


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_surface_distances_match_monai(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    pred, ref = blob_pair(shape, seed)
    ours = surface_distances(pred, ref, spacing)
    y_pred, y = one_hot(pred), one_hot(ref)
    hd = monai_metrics.compute_hausdorff_distance(
        y_pred, y, include_background=True, spacing=spacing
    )
    hd95 = monai_metrics.compute_hausdorff_distance(
        y_pred, y, include_background=True, percentile=95, spacing=spacing
    )
    assd = monai_metrics.compute_average_surface_distance(
        y_pred, y, include_background=True, symmetric=True, spacing=spacing
    )
    assert ours.hausdorff_mm > 0.0
    assert ours.hausdorff_mm == pytest.approx(float(hd.item()), rel=RTOL)
    assert ours.hd95_mm == pytest.approx(float(hd95.item()), rel=RTOL)
    assert ours.assd_mm == pytest.approx(float(assd.item()), rel=RTOL)


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_overlap_metrics_match_monai(
    shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    pred, ref = blob_pair(shape, seed)
    counts = confusion_counts(pred, ref)
    y_pred, y = one_hot(pred), one_hot(ref)
    monai_dice = monai_metrics.compute_dice(y_pred, y, include_background=True)
    monai_iou = monai_metrics.compute_iou(y_pred, y, include_background=True)
    assert counts.dice == pytest.approx(float(monai_dice.item()), rel=RTOL)
    assert counts.iou == pytest.approx(float(monai_iou.item()), rel=RTOL)
    matrix = monai_metrics.get_confusion_matrix(y_pred, y, include_background=True)
    for name in ("sensitivity", "specificity", "precision"):
        expected = monai_metrics.compute_confusion_matrix_metric(name, matrix)
        assert getattr(counts, name) == pytest.approx(float(expected.item()), rel=RTOL), name
