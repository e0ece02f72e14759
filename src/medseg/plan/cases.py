"""Training cases in the plan's geometry: reoriented, resampled in-plane, normalised.

The order is the runtime's (``Segmenter``): reorient to RAS (exact flips and transposes),
resample the two in-plane axes to the recipe's ``target_spacing`` (image: cubic; labels:
one-hot linear then argmax, as nnU-Net; nothing along the slice axis), then normalise with
the recipe. What training and export see is therefore what the scanner side feeds the
network. numpy + scipy (through :mod:`medseg.transforms.resample`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.nnunet import NnUNetDataset
from medseg.errors import ConfigError
from medseg.plan.fingerprint import to_training_orientation
from medseg.transforms.preprocessing import Recipe, normalize_volume
from medseg.transforms.volume import Volume

__all__ = ["PreparedCase", "centred_start", "crop_patch", "load_prepared_cases", "prepare_volume"]


@dataclass(frozen=True)
class PreparedCase:
    """One case as the network sees it.

    Attributes:
        case_id: the case id.
        image: ``(C, X, Y, Z)`` float32 in RAS order, in-plane at the target spacing, normalised.
        label: ``(X, Y, Z)`` uint8 class indices on the same grid, or ``None``.
        spacing: ``(X, Y, Z)`` mm of that grid.
        slice_axis: the recipe's slice axis.
        source_orientation: voxel order of the files (e.g. ``"LPS"``).
        source_shape: ``(X, Y, Z)`` of the files.
        source_spacing: ``(X, Y, Z)`` mm of the files.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    slice_axis: int
    source_orientation: str
    source_shape: tuple[int, int, int]
    source_spacing: tuple[float, float, float]

    @property
    def num_slices(self) -> int:
        """Slices along the slice axis."""
        return int(self.image.shape[1 + self.slice_axis])

    def slice_images(self) -> np.ndarray:
        """``(N, C, H, W)`` view: slices along the slice axis, in-plane axes in volume order."""
        return np.moveaxis(self.image, 1 + self.slice_axis, 0)

    def slice_labels(self) -> np.ndarray:
        """``(N, H, W)`` view of the labels, like :meth:`slice_images`."""
        if self.label is None:
            raise ConfigError(f"case {self.case_id} has no label")
        return np.moveaxis(self.label, self.slice_axis, 0)

    @property
    def slice_spacing(self) -> tuple[float, float, float]:
        """Spacing of the ``(N, H, W)`` slice stack: slice axis first, then H and W."""
        a, b = (i for i in range(3) if i != self.slice_axis)
        return self.spacing[self.slice_axis], self.spacing[a], self.spacing[b]


def crop_patch(
    image: np.ndarray, label: np.ndarray | None, patch: tuple[int, int], top: int, left: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``patch`` window at ``(top, left)`` of a ``(C, H, W)`` slice, zero-padded outside.

    ``top``/``left`` may be negative or run past the slice (padding: image 0, label 0).
    Returns float32 ``(C, h, w)`` and uint8 ``(h, w)`` (or ``None``).
    """
    h, w = image.shape[1:]
    ph, pw = patch
    out = np.zeros((image.shape[0], ph, pw), dtype=np.float32)
    out_label = None if label is None else np.zeros((ph, pw), dtype=np.uint8)
    sy = slice(max(top, 0), min(top + ph, h))
    sx = slice(max(left, 0), min(left + pw, w))
    if sy.start < sy.stop and sx.start < sx.stop:
        dy = slice(sy.start - top, sy.stop - top)
        dx = slice(sx.start - left, sx.stop - left)
        out[:, dy, dx] = image[:, sy, sx]
        if out_label is not None and label is not None:
            out_label[dy, dx] = label[sy, sx]
    return out, out_label


def centred_start(size: int, patch: int, centre: float) -> int:
    """Start of a ``patch`` window centred on ``centre``, kept inside ``size`` when it fits
    (or covering it, centred, when the slice is smaller than the patch)."""
    lo, hi = min(0, size - patch), max(0, size - patch)
    if size < patch:
        return (size - patch) // 2
    return int(np.clip(round(centre - patch / 2), lo, hi))


def _check_window_recipe(recipe: Recipe) -> tuple[float, float]:
    target = getattr(recipe, "target_spacing", None)
    if getattr(recipe, "pipeline_kind", None) != "window" or target is None:
        raise ConfigError(
            f"planned cases need a 'window' recipe with target_spacing, got size_policy "
            f"{recipe.size_policy!r}"
        )
    return float(target[0]), float(target[1])


def prepare_volume(volume: Volume, recipe: Recipe, num_classes: int) -> PreparedCase:
    """Reorient, resample and normalise one case (see the module docstring)."""
    from medseg.transforms.resample import resample_inplane, resample_labels_inplane

    target = _check_window_recipe(recipe)
    ras, codes = to_training_orientation(volume)
    axis = recipe.slice_axis
    image = resample_inplane(ras.image, ras.spacing, target, axis, order=3)
    label = None
    if ras.label is not None:
        label = resample_labels_inplane(ras.label, ras.spacing, target, axis, num_classes)
        label = label.astype(np.uint8, copy=False)
    image = normalize_volume(image, recipe)
    spacing = list(ras.spacing)
    a, b = (i for i in range(3) if i != axis)
    spacing[a], spacing[b] = target
    return PreparedCase(
        case_id=volume.case_id,
        image=np.ascontiguousarray(image, dtype=np.float32),
        label=None if label is None else np.ascontiguousarray(label),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        slice_axis=axis,
        source_orientation=codes,
        source_shape=volume.shape,
        source_spacing=volume.spacing,
    )


def load_prepared_cases(
    dataset_dir: Path | NnUNetDataset, case_ids: Iterable[str], recipe: Recipe
) -> list[PreparedCase]:
    """Load and prepare the given training (or test) cases of a dataset, in the given order.

    Args:
        dataset_dir: the dataset folder (or an opened dataset).
        case_ids: which cases.
        recipe: a ``"window"`` recipe (the run's / bundle's).
    """
    _check_window_recipe(recipe)
    dataset = (
        dataset_dir if isinstance(dataset_dir, NnUNetDataset) else NnUNetDataset.open(dataset_dir)
    )
    num_classes = dataset.spec.num_classes
    return [prepare_volume(dataset.load_case(c), recipe, num_classes) for c in case_ids]
