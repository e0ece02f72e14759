"""Surface-distance metrics of two binary masks, in millimetres.

The surface of a mask is ``mask XOR binary_erosion(mask)`` (scipy's default cross-shaped
structuring element, voxels outside the image count as background): the same definition as
MONAI's ``get_mask_edges`` without sub-voxel areas. The distance from a surface voxel of one
mask to the other mask's surface is the exact Euclidean distance between voxel centres,
``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, so anisotropic voxels are
handled. With ``d(P->R)`` the distances from each prediction surface voxel to the
reference surface, and ``d(R->P)`` the other direction (MONAI's definitions):

* Hausdorff distance: ``max(max d(P->R), max d(R->P))``;
* HD95: ``max(p95 d(P->R), p95 d(R->P))``, percentiles with linear interpolation;
* ASSD: the mean of ``d(P->R)`` and ``d(R->P)`` concatenated (each surface voxel weighs the
  same), MONAI's ``compute_average_surface_distance(symmetric=True)``.

Empty-mask policy: both empty gives 0.0 for all three; exactly one empty gives the diagonal
of the image extent, :func:`image_diagonal_mm`, for all three, with ``one_empty=True``.

The distances are computed on the bounding box of both masks plus a one-voxel margin, which
gives the same result as the whole image and keeps large 3D volumes fast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.deps import require
from medseg.errors import ConfigError
from medseg.metrics._checks import check_masks, check_spacing

__all__ = ["SurfaceDistances", "image_diagonal_mm", "surface_distances"]


@dataclass(frozen=True)
class SurfaceDistances:
    """Symmetric surface distances between a prediction and a reference mask.

    Attributes:
        hausdorff_mm: Hausdorff distance (maximum), mm.
        hd95_mm: 95th-percentile Hausdorff distance, mm.
        assd_mm: average symmetric surface distance, mm.
        one_empty: exactly one of the two masks was empty, so the three distances are the
            image diagonal (policy value, not a measurement).
    """

    hausdorff_mm: float
    hd95_mm: float
    assd_mm: float
    one_empty: bool


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Diagonal of the image extent, ``sqrt(sum((shape[i] * spacing[i]) ** 2))``, in mm.

    The value given to the surface distances when exactly one mask is empty (the worst
    distance in the field of view; BraTS uses 373.13 mm for 240 x 240 x 155 voxels at 1 mm).

    Args:
        shape: image shape in voxels, e.g. ``(X, Y, Z)``.
        spacing: voxel size in mm, one value per axis.
    """
    spacing_mm = check_spacing(spacing, len(shape))
    return math.sqrt(sum((int(n) * s) ** 2 for n, s in zip(shape, spacing_mm, strict=True)))


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of a non-empty ``mask`` grown by ``margin``, clipped."""
    box = []
    for axis, size in enumerate(mask.shape):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other_axes))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, size)))
    return tuple(box)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> SurfaceDistances:
    """Hausdorff distance, HD95 and ASSD between two bool masks, in mm.

    Args:
        pred: predicted mask, bool, ``(H, W)`` or ``(X, Y, Z)``.
        ref: reference mask, bool, same shape as ``pred``.
        spacing: voxel size in mm, one positive value per axis of ``pred``.

    Returns:
        The three distances and whether exactly one mask was empty (see the module
        docstring for the empty-mask policy).

    Raises:
        ConfigError: not bool masks, shapes differ, not 2D/3D, or bad spacing.
        MissingDependencyError: scipy is not installed.
    """
    pred, ref = check_masks(pred, ref)
    if pred.ndim not in (2, 3):
        raise ConfigError(f"masks have shape {pred.shape} ({pred.ndim}D); they must be 2D or 3D")
    spacing_mm = check_spacing(spacing, pred.ndim)
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not pred_any and not ref_any:
        return SurfaceDistances(hausdorff_mm=0.0, hd95_mm=0.0, assd_mm=0.0, one_empty=False)
    if pred_any != ref_any:
        diagonal = image_diagonal_mm(pred.shape, spacing_mm)
        return SurfaceDistances(
            hausdorff_mm=diagonal, hd95_mm=diagonal, assd_mm=diagonal, one_empty=True
        )

    ndimage = require("scipy.ndimage", "surface distances")
    # Outside the box every voxel is background, so eroding the crop (outside = background)
    # finds the same surfaces as eroding the whole image; the 1-voxel margin is MONAI's.
    box = _bounding_box(pred | ref, margin=1)
    pred_crop, ref_crop = pred[box], ref[box]
    pred_surface = pred_crop ^ ndimage.binary_erosion(pred_crop)
    ref_surface = ref_crop ^ ndimage.binary_erosion(ref_crop)
    # Distance of every voxel to the nearest surface voxel of the other mask.
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_mm)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)
    pred_to_ref = np.asarray(to_ref[pred_surface], dtype=np.float64)
    ref_to_pred = np.asarray(to_pred[ref_surface], dtype=np.float64)

    hausdorff = max(float(pred_to_ref.max()), float(ref_to_pred.max()))
    hd95 = max(float(np.percentile(pred_to_ref, 95)), float(np.percentile(ref_to_pred, 95)))
    assd = float(np.concatenate([pred_to_ref, ref_to_pred]).mean())
    return SurfaceDistances(hausdorff_mm=hausdorff, hd95_mm=hd95, assd_mm=assd, one_empty=False)
