"""Segmentation metrics as pure functions: overlap, surface distances, volumes, aggregation.

Inputs are numpy arrays: bool masks for the binary functions (:func:`dice`,
:func:`surface_distances`, ...), integer label maps ``(H, W)`` or ``(X, Y, Z)`` of class
indices for :func:`compute_case_metrics`, with the voxel ``spacing`` in mm (one positive
value per axis). Distances are in mm, volumes in ml (``prod(spacing) / 1000`` per voxel).
Results are frozen dataclasses keyed by class and metric names, with ``to_dict()`` for
JSON. Definitions follow MONAI (``compute_dice``, ``compute_hausdorff_distance``,
``compute_average_surface_distance``), and the unit tests cross-check them.

Empty-mask policy, per class:

* Both prediction and reference empty: Dice = IoU = 1.0, Hausdorff = HD95 = ASSD = 0.0,
  volume difference 0.0 ml.
* Exactly one empty: Dice = IoU = 0.0; Hausdorff = HD95 = ASSD = the diagonal of the image
  extent in mm, ``sqrt(sum((shape[i] * spacing[i]) ** 2))`` over the full image (the worst
  distance in the field of view, as in BraTS), and ``surface_one_empty`` is set so that
  :func:`aggregate` counts these cases. A case scored on separate parts (the validation
  slice blocks of ``medseg bench``) pools the parts' surface distances,
  :func:`pooled_surface_distances`, rather than averaging one policy value per part.
* Undefined ratios are NaN: sensitivity when the reference is empty, precision when the
  prediction is empty, specificity when the reference covers every voxel, relative volume
  difference when the reference is empty (also when both are empty).
* :func:`aggregate` and the mean over classes leave NaN values out and report how many
  values were defined; ``to_dict()`` writes NaN as ``null``.

Dice wherever the toolkit reports it (training validation, export accuracy and its INT8
guard, ``medseg bench``, ``medseg infer --reference``) goes through :func:`compute_dice` and
:class:`DiceAccumulator` (:mod:`medseg.metrics.dice`), whose ``empty`` parameter chooses the
both-empty value: ``"one"`` (1.0, as above) or ``"nan"`` (undefined, left out of means).

Only numpy is imported with this package; scipy (``medseg-edge[data]``) is imported when a
surface distance is first computed. torch is never used.
"""

from __future__ import annotations

from medseg.metrics.aggregate import AggregateMetrics, ClassSummary, MetricSummary, aggregate
from medseg.metrics.case import METRIC_NAMES, CaseMetrics, ClassMetrics, compute_case_metrics
from medseg.metrics.dice import (
    EMPTY_POLICIES,
    DiceAccumulator,
    EmptyPolicy,
    compute_confusion,
    compute_dice,
    dice_of_counts,
)
from medseg.metrics.overlap import (
    ConfusionCounts,
    confusion_counts,
    dice,
    iou,
    precision,
    sensitivity,
    specificity,
)
from medseg.metrics.surface import (
    SurfaceDistances,
    directed_surface_distances,
    image_diagonal_mm,
    pooled_surface_distances,
    surface_distances,
)

__all__ = [
    "EMPTY_POLICIES",
    "METRIC_NAMES",
    "AggregateMetrics",
    "CaseMetrics",
    "ClassMetrics",
    "ClassSummary",
    "ConfusionCounts",
    "DiceAccumulator",
    "EmptyPolicy",
    "MetricSummary",
    "SurfaceDistances",
    "aggregate",
    "compute_case_metrics",
    "compute_confusion",
    "compute_dice",
    "confusion_counts",
    "dice",
    "dice_of_counts",
    "directed_surface_distances",
    "image_diagonal_mm",
    "iou",
    "pooled_surface_distances",
    "precision",
    "sensitivity",
    "specificity",
    "surface_distances",
]
