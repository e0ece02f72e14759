"""In-plane resampling to the network's spacing and back to the scan's own grid.

2D networks see slices cut along the recipe's slice axis; only the two in-plane axes are
resampled (nnU-Net's 2D configuration never resamples along the slice axis). Images use
cubic splines (order 3, as nnU-Net), labels are resampled class by class as one-hot masks
with linear interpolation and re-assembled by argmax (nnU-Net's ``resample_data_or_seg``),
and probabilities go back with linear interpolation. All interpolation is
:func:`scipy.ndimage.zoom` with ``grid_mode=True`` (pixel edges aligned, like
``skimage.transform.resize``); nothing here is a hand-written resampler.

The work is done slice by slice along the slice axis, so memory stays at one volume plus
one slice, whatever the scan size. numpy + scipy only: the lean runtime imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from medseg.errors import ConfigError

__all__ = [
    "inplane_axes",
    "resample_inplane",
    "resample_labels_inplane",
    "resampled_shape",
    "resize_slice",
    "resize_to_shape",
]

MAX_SPACING_MM = 50.0


def inplane_axes(slice_axis: int) -> tuple[int, int]:
    """The two ``(X, Y, Z)`` axes other than ``slice_axis``, in axis order."""
    if slice_axis not in (0, 1, 2):
        raise ConfigError(f"slice_axis {slice_axis} must be 0, 1 or 2")
    a, b = (ax for ax in (0, 1, 2) if ax != slice_axis)
    return a, b


def _check_spacing(spacing: Sequence[float], n: int, what: str) -> tuple[float, ...]:
    values = tuple(float(s) for s in spacing)
    if len(values) != n:
        raise ConfigError(f"{what} {tuple(spacing)} must have {n} values (mm)")
    for s in values:
        if not (np.isfinite(s) and 0.0 < s <= MAX_SPACING_MM):
            raise ConfigError(
                f"{what} {tuple(spacing)} must be finite, > 0 and <= {MAX_SPACING_MM:g} mm"
            )
    return values


def resampled_shape(
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    slice_axis: int,
) -> tuple[int, int, int]:
    """``(X', Y', Z')`` after resampling the in-plane axes of an ``(X, Y, Z)`` grid.

    Each in-plane size becomes ``round(size * spacing / target)`` (at least 1), nnU-Net's
    rule; the slice axis keeps its size.
    """
    if len(shape) != 3:
        raise ConfigError(f"resampled_shape expects an (X, Y, Z) shape, got {tuple(shape)}")
    sp = _check_spacing(spacing, 3, "spacing")
    target = _check_spacing(target_spacing, 2, "target_spacing")
    out = [int(s) for s in shape]
    for ax, t in zip(inplane_axes(slice_axis), target, strict=True):
        out[ax] = max(1, round(out[ax] * sp[ax] / t))
    return out[0], out[1], out[2]


def resize_slice(array: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Resize the last two axes of ``(..., H, W)`` to exactly ``size`` (float32 out).

    Args:
        array: float array; leading axes (channels, classes) are resized independently.
        size: ``(H', W')``.
        order: spline order, 0-5 (3 for images, 1 for probabilities / one-hot masks).
    """
    h, w = array.shape[-2:]
    if (h, w) == tuple(size):
        return array.astype(np.float32, copy=False)
    lead = array.shape[:-2]
    flat = array.reshape(-1, h, w)
    out = np.empty((flat.shape[0], *size), dtype=np.float32)
    zoom = (size[0] / h, size[1] / w)

    def plane(i: int) -> None:
        ndimage.zoom(
            flat[i].astype(np.float32, copy=False),
            zoom,
            output=out[i],
            order=order,
            mode="nearest",
            grid_mode=True,
            prefilter=order > 1,
        )

    # planes are independent and scipy.ndimage releases the GIL: same result, on every core
    workers = min(_threads(), flat.shape[0])
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(plane, range(flat.shape[0])))
    else:
        for i in range(flat.shape[0]):
            plane(i)
    return out.reshape(*lead, *size)


def _threads() -> int:
    """CPU cores this process may use (at most 8), for plane-parallel resampling."""
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(8, os.cpu_count() or 1))


def _per_slice(
    volume: np.ndarray, shape: tuple[int, int, int], slice_axis: int, order: int
) -> np.ndarray:
    """Resize the in-plane axes of ``(C, X, Y, Z)`` slice by slice to spatial ``shape``."""
    a, b = inplane_axes(slice_axis)
    moved = np.moveaxis(volume, slice_axis + 1, 1)  # (C, S, A, B) view
    out = np.empty((moved.shape[0], moved.shape[1], shape[a], shape[b]), dtype=np.float32)
    for s in range(moved.shape[1]):
        out[:, s] = resize_slice(moved[:, s], (shape[a], shape[b]), order)
    return np.moveaxis(out, 1, slice_axis + 1)


def resample_inplane(
    volume: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    slice_axis: int,
    order: int = 3,
) -> np.ndarray:
    """Resample the in-plane axes of a ``(C, X, Y, Z)`` volume to ``target_spacing``.

    Args:
        volume: ``(C, X, Y, Z)`` image, any real dtype.
        spacing: the volume's voxel sizes ``(sx, sy, sz)`` in mm.
        target_spacing: the in-plane spacings in mm of the two non-slice axes, in axis order.
        slice_axis: the axis slices are cut along (not resampled).
        order: spline order in-plane (3, as nnU-Net, for images).

    Returns:
        float32 ``(C, X', Y', Z')`` with the shape of :func:`resampled_shape`.
    """
    if volume.ndim != 4:
        raise ConfigError(f"resample_inplane expects (C, X, Y, Z), got shape {volume.shape}")
    shape = resampled_shape(volume.shape[1:], spacing, target_spacing, slice_axis)
    return _per_slice(volume, shape, slice_axis, order)


def _labels_to_shape(
    labels: np.ndarray, shape: tuple[int, int, int], slice_axis: int | None, num_classes: int
) -> np.ndarray:
    """One-hot linear resize of ``(X, Y, Z)`` labels to ``shape``, then argmax (same dtype)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(f"label volumes must be integer, got dtype {labels.dtype}")
    if tuple(labels.shape) == tuple(shape):
        return labels.copy()
    best = np.full(shape, -1.0, dtype=np.float32)
    out = np.zeros(shape, dtype=labels.dtype)
    for k in range(num_classes):
        mask = (labels == k).astype(np.float32)[None]
        if slice_axis is None:
            prob = _zoom3d(mask[0], shape, order=1)
        else:
            prob = _per_slice(mask, shape, slice_axis, order=1)[0]
        better = prob > best
        best[better] = prob[better]
        out[better] = k
    return out


def resample_labels_inplane(
    labels: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    slice_axis: int,
    num_classes: int,
) -> np.ndarray:
    """Resample ``(X, Y, Z)`` integer labels in-plane: one-hot linear per class, then argmax.

    Args:
        labels: ``(X, Y, Z)`` class indices in ``0..num_classes-1``.
        spacing: the volume's voxel sizes in mm.
        target_spacing: in-plane target spacings in mm (non-slice axes, in axis order).
        slice_axis: the axis that is not resampled.
        num_classes: number of classes, background included.

    Returns:
        ``(X', Y', Z')`` labels of the input dtype.
    """
    if labels.ndim != 3:
        raise ConfigError(f"resample_labels_inplane expects (X, Y, Z), got shape {labels.shape}")
    shape = resampled_shape(labels.shape, spacing, target_spacing, slice_axis)
    return _labels_to_shape(labels, shape, slice_axis, num_classes)


def _zoom3d(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resize a 3D float array to exactly ``shape``; 2D per slice when one axis is kept."""
    kept = [ax for ax in range(3) if array.shape[ax] == shape[ax]]
    if kept:
        return _per_slice(array[None], tuple(shape), kept[-1], order)[0]  # type: ignore[arg-type]
    zoom = tuple(n / o for n, o in zip(shape, array.shape, strict=True))
    out = np.empty(tuple(shape), dtype=np.float32)
    ndimage.zoom(
        array.astype(np.float32, copy=False),
        zoom,
        output=out,
        order=order,
        mode="nearest",
        grid_mode=True,
        prefilter=order > 1,
    )
    return out


def resize_to_shape(array: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resize any ``(..., X, Y, Z)`` array to exactly the spatial ``shape``.

    Used to go back to the scan's grid. Float arrays (probabilities: ``order=1``) are resized
    per leading index and returned as float32; integer arrays are label maps, resized through
    one-hot masks (linear) and argmax, and keep their dtype (``order`` is then ignored).
    """
    if array.ndim < 3 or len(shape) != 3:
        raise ConfigError(
            f"resize_to_shape expects (..., X, Y, Z) and a 3-value shape, got "
            f"{array.shape} -> {tuple(shape)}"
        )
    target = tuple(int(s) for s in shape)
    if any(s < 1 for s in target):
        raise ConfigError(f"resize_to_shape target {target} must be positive")
    if np.issubdtype(array.dtype, np.integer):
        lead = array.shape[:-3]
        flat = array.reshape(-1, *array.shape[-3:])
        num_classes = int(flat.max()) + 1 if flat.size else 1
        kept = [ax for ax in range(3) if flat.shape[ax + 1] == target[ax]]
        axis = kept[-1] if kept else None
        out_l = np.stack([_labels_to_shape(v, target, axis, num_classes) for v in flat])  # type: ignore[arg-type]
        return out_l.reshape(*lead, *target)
    lead = array.shape[:-3]
    flat = array.reshape(-1, *array.shape[-3:])
    out = np.stack([_zoom3d(v, target, order) for v in flat]) if flat.shape[0] else flat
    return out.reshape(*lead, *target).astype(np.float32, copy=False)
