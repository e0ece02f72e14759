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

Pooled over parts of one case (:func:`pooled_surface_distances`, e.g. the separate blocks of
validation slices of a slice-level split): the directed distances of every part
(:func:`directed_surface_distances`) are concatenated before the maximum, percentile and
mean, so a part is weighted by its surface, as it would be in one whole volume. In a part
where exactly one mask is empty, each surface voxel of the other gets that part's diagonal.
Averaging per-part HD95 values instead would let a thin part holding a few voxels of a class
count as much as the rest of the case (at the policy value, the image diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.deps import require
from medseg.errors import ConfigError
from medseg.metrics._checks import check_masks, check_spacing

__all__ = [
    "SurfaceDistances",
    "directed_surface_distances",
    "image_diagonal_mm",
    "pooled_surface_distances",
    "surface_distances",
]


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


def directed_surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each surface voxel of one mask to the other mask's surface, in mm.

    Args:
        pred: predicted mask, bool, ``(H, W)`` or ``(X, Y, Z)``.
        ref: reference mask, bool, same shape as ``pred``.
        spacing: voxel size in mm, one positive value per axis of ``pred``.

    Returns:
        ``(pred_to_ref, ref_to_pred)``, float64 arrays ``(n_pred_surface,)`` and
        ``(n_ref_surface,)``. Both empty: two empty arrays. Exactly one empty: the surface
        voxels of the non-empty mask hold :func:`image_diagonal_mm`; the other array is empty.

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
        return np.zeros(0), np.zeros(0)
    ndimage = require("scipy.ndimage", "surface distances")
    # Outside the box every voxel is background, so eroding the crop (outside = background)
    # finds the same surfaces as eroding the whole image; the 1-voxel margin is MONAI's.
    box = _bounding_box(pred | ref, margin=1)
    pred_crop, ref_crop = pred[box], ref[box]
    pred_surface = pred_crop ^ ndimage.binary_erosion(pred_crop)
    ref_surface = ref_crop ^ ndimage.binary_erosion(ref_crop)
    if pred_any != ref_any:
        diagonal = image_diagonal_mm(pred.shape, spacing_mm)
        surface = pred_surface if pred_any else ref_surface
        unmatched = np.full(int(np.count_nonzero(surface)), diagonal)
        return (unmatched, np.zeros(0)) if pred_any else (np.zeros(0), unmatched)
    # Distance of every voxel to the nearest surface voxel of the other mask.
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing_mm)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing_mm)
    pred_to_ref = np.asarray(to_ref[pred_surface], dtype=np.float64)
    ref_to_pred = np.asarray(to_pred[ref_surface], dtype=np.float64)
    return pred_to_ref, ref_to_pred


def _summary(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> SurfaceDistances:
    """Hausdorff, HD95 and ASSD of directed distances (a direction may be empty)."""
    directions = [d for d in (pred_to_ref, ref_to_pred) if d.size]
    one_empty = (pred_to_ref.size == 0) != (ref_to_pred.size == 0)
    if not directions:
        return SurfaceDistances(hausdorff_mm=0.0, hd95_mm=0.0, assd_mm=0.0, one_empty=False)
    hausdorff = max(float(d.max()) for d in directions)
    hd95 = max(float(np.percentile(d, 95)) for d in directions)
    assd = float(np.concatenate(directions).mean())
    return SurfaceDistances(hausdorff_mm=hausdorff, hd95_mm=hd95, assd_mm=assd, one_empty=one_empty)


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
    if pred.ndim in (2, 3) and bool(pred.any()) != bool(ref.any()):
        diagonal = image_diagonal_mm(pred.shape, check_spacing(spacing, pred.ndim))
        return SurfaceDistances(
            hausdorff_mm=diagonal, hd95_mm=diagonal, assd_mm=diagonal, one_empty=True
        )
    return _summary(*directed_surface_distances(pred, ref, spacing))


def pooled_surface_distances(
    parts: Iterable[tuple[np.ndarray, np.ndarray]], spacing: Sequence[float]
) -> SurfaceDistances:
    """Hausdorff, HD95 and ASSD of one case scored on separate parts, in mm.

    The directed distances of each ``(pred, ref)`` part are computed within the part and
    pooled (see the module docstring); a single part gives :func:`surface_distances`.

    Args:
        parts: ``(pred, ref)`` bool mask pairs, each pair of one shape, ``(H, W)`` or
            ``(X, Y, Z)`` (e.g. blocks of consecutive slices of one volume).
        spacing: voxel size in mm, one value per axis, the same for every part.

    Returns:
        The pooled distances; ``one_empty`` when, over all parts together, exactly one of
        prediction and reference is empty.

    Raises:
        ConfigError: no parts, or a bad part (see :func:`directed_surface_distances`).
    """
    pred_to_ref: list[np.ndarray] = []
    ref_to_pred: list[np.ndarray] = []
    for pred, ref in parts:
        forward, backward = directed_surface_distances(pred, ref, spacing)
        pred_to_ref.append(forward)
        ref_to_pred.append(backward)
    if not pred_to_ref:
        raise ConfigError("pooled_surface_distances needs at least one (pred, ref) part")
    return _summary(np.concatenate(pred_to_ref), np.concatenate(ref_to_pred))
