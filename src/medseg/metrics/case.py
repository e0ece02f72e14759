"""Per-class metrics of one case: a predicted and a reference label map.

:func:`compute_case_metrics` turns two integer label maps into one :class:`ClassMetrics` per
named class (overlap, surface distances, volumes), keyed by class name, and their mean over
classes. The empty-mask policy is the one of :mod:`medseg.metrics`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from medseg.errors import ConfigError
from medseg.metrics._checks import check_label_maps, check_spacing, json_float, nan_summary
from medseg.metrics.overlap import confusion_counts
from medseg.metrics.surface import surface_distances

__all__ = ["METRIC_NAMES", "CaseMetrics", "ClassMetrics", "compute_case_metrics"]


@dataclass(frozen=True)
class ClassMetrics:
    """Metrics of one class in one case. NaN marks an undefined value.

    Attributes:
        dice: Dice coefficient, 0..1.
        iou: intersection over union (Jaccard), 0..1.
        sensitivity: recall, 0..1; NaN when the reference is empty.
        specificity: true-negative rate, 0..1; NaN when the reference covers every voxel.
        precision: positive predictive value, 0..1; NaN when the prediction is empty.
        hausdorff_mm: Hausdorff distance, mm (NaN if surface metrics were not computed).
        hd95_mm: 95th-percentile Hausdorff distance, mm (idem).
        assd_mm: average symmetric surface distance, mm (idem).
        volume_pred_ml: predicted volume, ml.
        volume_ref_ml: reference volume, ml.
        volume_diff_ml: predicted minus reference volume, ml.
        volume_diff_pct: ``100 * volume_diff_ml / volume_ref_ml``; NaN when the reference
            is empty.
        surface_one_empty: exactly one mask was empty, so the surface distances hold the
            image diagonal (policy value).
    """

    dice: float
    iou: float
    sensitivity: float
    specificity: float
    precision: float
    hausdorff_mm: float
    hd95_mm: float
    assd_mm: float
    volume_pred_ml: float
    volume_ref_ml: float
    volume_diff_ml: float
    volume_diff_pct: float
    surface_one_empty: bool

    def to_dict(self) -> dict[str, float | bool | None]:
        """JSON-ready dict; NaN (undefined) becomes ``None``."""
        return {
            key: value if isinstance(value, bool) else json_float(value)
            for key, value in asdict(self).items()
        }


#: The float metrics of :class:`ClassMetrics`, in field order: the keys of every mean and
#: aggregate.
METRIC_NAMES: tuple[str, ...] = tuple(
    f.name for f in fields(ClassMetrics) if f.name != "surface_one_empty"
)


@dataclass(frozen=True)
class CaseMetrics:
    """Metrics of one case, keyed by class name.

    Attributes:
        classes: class name -> :class:`ClassMetrics`, in the order of the ``classes`` given.
        mean: metric name (:data:`METRIC_NAMES`) -> mean over classes, ignoring NaN values
            (NaN when no class defines it).
        shape: label-map shape in voxels.
        spacing_mm: voxel size in mm, one value per axis.
    """

    classes: Mapping[str, ClassMetrics]
    mean: Mapping[str, float]
    shape: tuple[int, ...]
    spacing_mm: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN (undefined) becomes ``None``."""
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing_mm),
            "classes": {name: metrics.to_dict() for name, metrics in self.classes.items()},
            "mean": {name: json_float(value) for name, value in self.mean.items()},
        }


def _check_classes(classes: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(classes, Mapping) or not classes:
        raise ConfigError(
            f"classes {classes!r} must be a non-empty mapping of class name -> label value, "
            f'e.g. {{"CSF": 1, "GM": 2, "WM": 3}}'
        )
    out: dict[str, int] = {}
    for name, value in classes.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"class name {name!r} must be a non-empty string")
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ConfigError(f"class {name!r} has label value {value!r}; it must be an integer")
        if int(value) in out.values():
            raise ConfigError(
                f"class {name!r} reuses label value {int(value)} of another class in {classes}; "
                f"each class needs its own label value"
            )
        out[name] = int(value)
    return out


def _class_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_mm: tuple[float, ...],
    voxel_ml: float,
    include_surface: bool,
) -> ClassMetrics:
    counts = confusion_counts(pred, ref)
    if include_surface:
        surface = surface_distances(pred, ref, spacing_mm)
        hd, hd95, assd = surface.hausdorff_mm, surface.hd95_mm, surface.assd_mm
        one_empty = surface.one_empty
    else:
        hd = hd95 = assd = math.nan
        one_empty = False
    volume_pred = counts.n_pred * voxel_ml
    volume_ref = counts.n_ref * voxel_ml
    volume_diff = (counts.n_pred - counts.n_ref) * voxel_ml
    return ClassMetrics(
        dice=counts.dice,
        iou=counts.iou,
        sensitivity=counts.sensitivity,
        specificity=counts.specificity,
        precision=counts.precision,
        hausdorff_mm=hd,
        hd95_mm=hd95,
        assd_mm=assd,
        volume_pred_ml=volume_pred,
        volume_ref_ml=volume_ref,
        volume_diff_ml=volume_diff,
        volume_diff_pct=(
            math.nan if counts.n_ref == 0 else 100.0 * (counts.n_pred - counts.n_ref) / counts.n_ref
        ),
        surface_one_empty=one_empty,
    )


def compute_case_metrics(
    pred_labels: np.ndarray,
    ref_labels: np.ndarray,
    classes: Mapping[str, int],
    spacing: Sequence[float],
    include_surface: bool = True,
) -> CaseMetrics:
    """Per-class metrics of a predicted label map against a reference label map.

    Args:
        pred_labels: predicted class indices, integer, ``(H, W)`` or ``(X, Y, Z)``.
        ref_labels: reference class indices, integer, same shape.
        classes: class name -> label value, e.g. ``{"CSF": 1, "GM": 2, "WM": 3}``
            (background is usually left out by the caller).
        spacing: voxel size in mm, one positive value per axis. Volumes are
            ``count * prod(spacing) / 1000`` ml (for a 2D map, a 1 mm thick slice).
        include_surface: compute Hausdorff, HD95 and ASSD (scipy); when ``False`` they are
            NaN.

    Returns:
        Metrics per class name and their mean over classes.

    Raises:
        ConfigError: label maps not integer, not 2D/3D, or of different shapes; bad spacing;
            bad ``classes``.
        MissingDependencyError: ``include_surface`` and scipy is not installed.
    """
    pred_labels, ref_labels = check_label_maps(pred_labels, ref_labels)
    spacing_mm = check_spacing(spacing, pred_labels.ndim)
    label_of = _check_classes(classes)
    voxel_ml = math.prod(spacing_mm) / 1000.0

    per_class = {
        name: _class_metrics(
            pred_labels == value, ref_labels == value, spacing_mm, voxel_ml, include_surface
        )
        for name, value in label_of.items()
    }
    mean = {
        metric: nan_summary([getattr(m, metric) for m in per_class.values()])[0]
        for metric in METRIC_NAMES
    }
    return CaseMetrics(
        classes=MappingProxyType(per_class),
        mean=MappingProxyType(mean),
        shape=tuple(int(n) for n in pred_labels.shape),
        spacing_mm=spacing_mm,
    )
