"""nnU-Net v2's resampling, reproduced with scipy (no skimage, no torch).

nnU-Net's ``resample_data_or_seg_to_shape`` resizes each channel with
``skimage.transform.resize(mode="edge", anti_aliasing=False)``, which is
:func:`scipy.ndimage.zoom` with ``grid_mode=True`` and ``mode="nearest"`` followed by a clip to
the input's range; when one axis is much coarser than the others ("separate z"), the other two
are resized slice by slice with the data order and the coarse axis afterwards with
``order_z`` through :func:`scipy.ndimage.map_coordinates`. This module is that code, with the
same arithmetic in float64, so the results equal nnU-Net's to float rounding (tests compare).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "compute_new_shape",
    "determine_separate_z",
    "resample_to_shape",
    "skimage_resize",
]


def compute_new_shape(
    old_shape: Sequence[int], old_spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape after resampling from ``old_spacing`` to ``new_spacing`` (nnU-Net's rounding)."""
    return tuple(
        round(i / j * k) for i, j, k in zip(old_spacing, new_spacing, old_shape, strict=True)
    )


def _lowres_axes(spacing: Sequence[float]) -> np.ndarray:
    return np.where(max(spacing) / np.array(spacing) == 1)[0]


def determine_separate_z(
    force_separate_z: bool | None,
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    threshold: float = 3.0,
) -> tuple[bool, int | None]:
    """nnU-Net's ``determine_do_sep_z_and_axis``: whether and along which axis z is separate."""
    axis: np.ndarray | None
    if force_separate_z is not None:
        do_separate = force_separate_z
        axis = _lowres_axes(current_spacing) if force_separate_z else None
    elif max(current_spacing) / min(current_spacing) > threshold:
        do_separate, axis = True, _lowres_axes(current_spacing)
    elif max(new_spacing) / min(new_spacing) > threshold:
        do_separate, axis = True, _lowres_axes(new_spacing)
    else:
        do_separate, axis = False, None
    if axis is None or len(axis) != 1:
        return (False, None) if axis is not None else (do_separate, None)
    return do_separate, int(axis[0])


def skimage_resize(image: np.ndarray, shape: Sequence[int] | np.ndarray, order: int) -> np.ndarray:
    """``skimage.transform.resize(image, shape, order, mode="edge", anti_aliasing=False)``.

    Args:
        image: float64 array of any dimension.
        shape: output shape, same length.
        order: spline order 0..5.

    Returns:
        float64 array of ``shape``, clipped to the input's range.
    """
    factors = np.divide(image.shape, shape)
    out = ndimage.zoom(image, [1 / f for f in factors], order=order, mode="nearest", grid_mode=True)
    np.clip(out, np.min(image), np.max(image), out=out)
    return out


def resample_to_shape(
    data: np.ndarray,
    new_shape: Sequence[int],
    current_spacing: Sequence[float],
    new_spacing: Sequence[float],
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
    separate_z_anisotropy_threshold: float = 3.0,
) -> np.ndarray:
    """nnU-Net's ``resample_data_or_seg_to_shape`` for images/logits (``is_seg=False``).

    Args:
        data: ``(C, z, y, x)`` float array.
        new_shape: target ``(z, y, x)``.
        current_spacing, new_spacing: mm, in the array's axis order; they decide separate z.
        order: spline order in-plane (or in 3D without separate z).
        order_z: order along the separate axis.
        force_separate_z: ``None``: decide from the spacings.
        separate_z_anisotropy_threshold: nnU-Net's ``ANISO_THRESHOLD`` (3).

    Returns:
        ``(C, *new_shape)`` in ``data``'s dtype (the input itself when the shape is unchanged).
    """
    do_separate, axis = determine_separate_z(
        force_separate_z, current_spacing, new_spacing, separate_z_anisotropy_threshold
    )
    shape = np.array(data.shape[1:])
    target = np.array([int(s) for s in new_shape])
    if np.all(shape == target):
        return data
    out = np.zeros((data.shape[0], *target), dtype=data.dtype)
    work = data.astype(np.float64, copy=False)
    if not do_separate or axis is None:
        for c in range(work.shape[0]):
            out[c] = skimage_resize(work[c], target, order)
        return out
    inplane = [a for a in range(3) if a != axis]
    shape_2d = target[inplane]
    for c in range(work.shape[0]):
        tmp = target.copy()
        tmp[axis] = shape[axis]
        stage = np.zeros(tmp)
        for i in range(shape[axis]):
            index: list[int | slice] = [slice(None)] * 3
            index[axis] = i
            stage[tuple(index)] = skimage_resize(work[c][tuple(index)], shape_2d, order)
        if shape[axis] != target[axis]:
            scale = np.array(stage.shape, dtype=np.float64) / target
            grid = np.mgrid[: target[0], : target[1], : target[2]].astype(np.float64)
            coords = scale[:, None, None, None] * (grid + 0.5) - 0.5
            out[c] = ndimage.map_coordinates(stage, coords, order=order_z, mode="nearest")
        else:
            out[c] = stage
    return out
