"""Input validation and small numeric helpers shared by the metric modules (private)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from medseg.config_io import json_ready
from medseg.errors import ConfigError

__all__ = [
    "check_label_maps",
    "check_masks",
    "check_spacing",
    "json_float",
    "nan_summary",
]


def check_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check two binary masks: numpy ``bool`` arrays of the same shape.

    Returns:
        ``(pred, ref)`` as numpy arrays (no copy, no conversion).

    Raises:
        ConfigError: not bool arrays, or shapes differ.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    for name, mask in (("pred", pred), ("ref", ref)):
        if mask.dtype != np.bool_:
            raise ConfigError(
                f"{name} mask has dtype {mask.dtype}; binary metrics accept bool masks only "
                f"(e.g. labels == 1)"
            )
    if pred.shape != ref.shape:
        raise ConfigError(
            f"pred and ref shapes differ: {pred.shape} vs {ref.shape}; they must be identical"
        )
    return pred, ref


def check_label_maps(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Check two label maps: integer (or bool) 2D/3D arrays of the same shape.

    Raises:
        ConfigError: not integer, not 2D/3D, or shapes differ.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    for name, labels in (("pred_labels", pred), ("ref_labels", ref)):
        if labels.dtype.kind not in "biu":
            raise ConfigError(
                f"{name} has dtype {labels.dtype}; label maps must be integer class indices "
                f"(int8..int64, uint8..uint64 or bool); round or cast the prediction first"
            )
        if labels.ndim not in (2, 3):
            raise ConfigError(
                f"{name} has shape {labels.shape} ({labels.ndim}D); label maps must be 2D or 3D"
            )
    if pred.shape != ref.shape:
        raise ConfigError(
            f"pred_labels and ref_labels shapes differ: {pred.shape} vs {ref.shape}; "
            f"they must be identical"
        )
    return pred, ref


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Check a voxel spacing: one positive finite value in mm per axis.

    Returns:
        The spacing as a tuple of floats.

    Raises:
        ConfigError: wrong length, non-numeric, zero, negative, NaN or infinite values.
    """
    if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Sequence | np.ndarray):
        raise ConfigError(
            f"spacing {spacing!r} is not a sequence; give one positive value in mm per axis "
            f"({ndim} values)"
        )
    values = list(spacing)
    if len(values) != ndim:
        raise ConfigError(
            f"spacing {tuple(values)} has {len(values)} values for a {ndim}D image; "
            f"give one positive value in mm per axis ({ndim} values)"
        )
    out: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ConfigError(f"spacing {tuple(values)} holds {value!r}; values must be numbers")
        fvalue = float(value)
        if not (math.isfinite(fvalue) and fvalue > 0.0):
            raise ConfigError(
                f"spacing {tuple(values)} holds {value!r}; every value must be positive and "
                f"finite (mm)"
            )
        out.append(fvalue)
    return tuple(out)


def json_float(value: float) -> float | None:
    """A float for JSON: NaN (undefined metric) becomes ``None`` (``null``)."""
    result: float | None = json_ready(float(value))
    return result


def nan_summary(values: Sequence[float]) -> tuple[float, float, float, int]:
    """Mean, std (``ddof=0``), median and count of the defined (non-NaN) values.

    Returns NaN statistics and a count of 0 when no value is defined, without warnings.
    """
    arr = np.asarray(values, dtype=np.float64)
    defined = arr[~np.isnan(arr)]
    if defined.size == 0:
        return math.nan, math.nan, math.nan, 0
    return (
        float(np.mean(defined)),
        float(np.std(defined)),
        float(np.median(defined)),
        int(defined.size),
    )
