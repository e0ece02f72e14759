"""The dataset fingerprint the planner works from (nnU-Net's "dataset fingerprint").

Over the training cases: each case's voxel order, shape and spacing **after reorientation to
the training orientation** (RAS: the spacing of an axis is the spacing of the voxel axis
that becomes it), the voxel count of every class, and per channel the intensity statistics
of the labelled foreground (label > 0), pooled over cases from a seeded sample of at most
:data:`FOREGROUND_SAMPLES_PER_CASE` voxels per case: mean, std, median, min, max, the 0.5th
and 99.5th percentiles, and the mean/std after clipping to those percentiles (nnU-Net's CT
normalisation). Refused here, with the files named: cases that disagree in channel count,
spacings above :data:`MAX_SPACING_MM` (0 and NaN are refused when a file is read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.dataset_json import Issue, format_problems
from medseg.data.nnunet import NnUNetDataset, scan_cases
from medseg.data.samples import dataset_fingerprint
from medseg.errors import DatasetError
from medseg.transforms.orientation import axis_codes, reorient_affine, reorient_plan, to_orientation
from medseg.transforms.volume import Volume

__all__ = [
    "FOREGROUND_SAMPLES_PER_CASE",
    "MAX_SPACING_MM",
    "TRAINING_ORIENTATION",
    "CaseGeometry",
    "ChannelStats",
    "Fingerprint",
    "compute_fingerprint",
    "open_for_planning",
    "to_training_orientation",
]

#: Every case is reoriented to this voxel order before it is sliced (as the runtime does).
TRAINING_ORIENTATION = "RAS"
#: Spacings above this (mm) are not a medical image voxel: refused.
MAX_SPACING_MM = 50.0
#: Foreground voxels sampled per case and channel for the intensity statistics.
FOREGROUND_SAMPLES_PER_CASE = 100_000
_SAMPLE_SEED = 1234


@dataclass(frozen=True)
class CaseGeometry:
    """One training case's geometry in the training orientation.

    Attributes:
        case_id: the case id.
        orientation: the voxel order of its files, e.g. ``"LPS"``.
        shape: ``(X, Y, Z)`` voxels after reorientation to RAS.
        spacing: ``(X, Y, Z)`` mm after reorientation to RAS.
        class_voxels: label value -> voxel count (every declared label, 0 included).
    """

    case_id: str
    orientation: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    class_voxels: dict[int, int]


@dataclass(frozen=True)
class ChannelStats:
    """Intensities of one channel over the labelled foreground of all training cases."""

    name: str
    mean: float
    std: float
    median: float
    minimum: float
    maximum: float
    percentile_00_5: float
    percentile_99_5: float
    clipped_mean: float
    clipped_std: float
    num_samples: int


@dataclass(frozen=True)
class Fingerprint:
    """What the planner knows about a dataset.

    Attributes:
        dataset: the dataset's name (``dataset.json`` ``name`` or the folder name).
        root: the dataset folder.
        hash: sha256 (16 hex) of dataset.json and every training file (as in the run record).
        channel_names: channel names in channel order.
        labels: class name -> label value.
        cases: the training cases' geometry.
        channels: per-channel foreground statistics.
    """

    dataset: str
    root: Path
    hash: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    cases: tuple[CaseGeometry, ...]
    channels: tuple[ChannelStats, ...]

    @property
    def spacings(self) -> np.ndarray:
        """``(cases, 3)`` spacings in mm (RAS axis order)."""
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    @property
    def shapes(self) -> np.ndarray:
        """``(cases, 3)`` shapes in voxels (RAS axis order)."""
        return np.array([c.shape for c in self.cases], dtype=np.int64)

    def class_frequencies(self) -> dict[str, float]:
        """Share of all training voxels per class name."""
        total = sum(sum(c.class_voxels.values()) for c in self.cases) or 1
        return {
            name: sum(c.class_voxels.get(v, 0) for c in self.cases) / total
            for name, v in self.labels.items()
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the ``fingerprint`` part of ``plans.json``)."""
        spacings, shapes = self.spacings, self.shapes
        return {
            "dataset": self.dataset,
            "hash": self.hash,
            "num_cases": len(self.cases),
            "channel_names": list(self.channel_names),
            "labels": dict(self.labels),
            "orientation": TRAINING_ORIENTATION,
            "source_orientations": sorted({c.orientation for c in self.cases}),
            "spacing_mm": {
                "median": np.median(spacings, axis=0).tolist(),
                "min": spacings.min(axis=0).tolist(),
                "max": spacings.max(axis=0).tolist(),
            },
            "shape": {
                "median": np.median(shapes, axis=0).tolist(),
                "min": shapes.min(axis=0).tolist(),
                "max": shapes.max(axis=0).tolist(),
            },
            "class_frequencies": self.class_frequencies(),
            "channels": [dict(s.__dict__) for s in self.channels],
            "cases": [
                {
                    "case_id": c.case_id,
                    "orientation": c.orientation,
                    "shape": list(c.shape),
                    "spacing": list(c.spacing),
                    "class_voxels": {str(k): v for k, v in c.class_voxels.items()},
                }
                for c in self.cases
            ],
        }


def to_training_orientation(volume: Volume) -> tuple[Volume, str]:
    """The volume reordered to RAS by exact flips/transposes, and its original voxel order.

    The affine is updated to describe the same world positions, and the spacing follows its
    axis (``spacing[i]`` of the result is the spacing of the source axis that became ``i``).
    """
    codes = axis_codes(volume.affine)
    if codes == TRAINING_ORIENTATION:
        return volume, codes
    perm, _ = reorient_plan(codes, TRAINING_ORIENTATION)
    image = np.ascontiguousarray(to_orientation(volume.image, codes, TRAINING_ORIENTATION, 1))
    label = None
    if volume.label is not None:
        label = np.ascontiguousarray(to_orientation(volume.label, codes, TRAINING_ORIENTATION))
    affine = reorient_affine(volume.affine, volume.shape, codes, TRAINING_ORIENTATION)
    sx, sy, sz = (float(volume.spacing[p]) for p in perm)
    return Volume(volume.case_id, image, label, affine, (sx, sy, sz)), codes


def open_for_planning(dataset_dir: Path) -> NnUNetDataset:
    """Open a dataset and refuse cases whose channel count disagrees with dataset.json."""
    dataset = NnUNetDataset.open(dataset_dir)
    _, issues = scan_cases(dataset.spec, ("train",))
    extra = [i for i in issues if "channel not in channel_names" in i.kind]
    if extra:
        n = dataset.spec.num_channels
        kind = (
            "{n} image file{s} beyond the "
            f"{n} channel{'s' if n != 1 else ''} of channel_names (every case needs the same "
            "channels)"
        )
        raise DatasetError(format_problems(dataset.root, [Issue(kind, i.item) for i in extra]))
    return dataset


def _check_spacing(volume: Volume, root: Path, dataset: NnUNetDataset) -> None:
    bad = [s for s in volume.spacing if not (np.isfinite(s) and 0 < s <= MAX_SPACING_MM)]
    if bad:
        path = dataset.case(volume.case_id).images[0]
        raise DatasetError(
            f"{path}: voxel spacing {tuple(round(s, 4) for s in volume.spacing)} mm; accepted: "
            f"finite spacings above 0 and at most {MAX_SPACING_MM:g} mm per axis"
        )


def _stats(name: str, values: np.ndarray) -> ChannelStats:
    if values.size == 0:
        raise DatasetError(f"channel {name!r}: no labelled foreground voxel in any training case")
    lo, hi = np.percentile(values, (0.5, 99.5))
    clipped = np.clip(values, lo, hi)
    return ChannelStats(
        name=name,
        mean=float(values.mean()),
        std=float(values.std()),
        median=float(np.median(values)),
        minimum=float(values.min()),
        maximum=float(values.max()),
        percentile_00_5=float(lo),
        percentile_99_5=float(hi),
        clipped_mean=float(clipped.mean()),
        clipped_std=float(clipped.std()),
        num_samples=int(values.size),
    )


def compute_fingerprint(dataset_dir: Path) -> Fingerprint:
    """Read every training case once and summarise the dataset (see the module docstring).

    Raises:
        DatasetError: unreadable or inconsistent files, channel counts that disagree, a
            spacing of 0, NaN or above 50 mm, no labelled foreground at all.
    """
    dataset = open_for_planning(dataset_dir)
    spec = dataset.spec
    rng = np.random.default_rng(_SAMPLE_SEED)
    geometries: list[CaseGeometry] = []
    samples: list[list[np.ndarray]] = [[] for _ in spec.channel_names]
    values = sorted(spec.labels.values())
    for case in dataset.cases("train"):
        volume = dataset.load_case(case)
        _check_spacing(volume, dataset.root, dataset)
        ras, codes = to_training_orientation(volume)
        assert ras.label is not None  # training cases have labels (checked on open)
        counts = np.bincount(ras.label.ravel().astype(np.intp), minlength=max(values) + 1)
        geometries.append(
            CaseGeometry(
                case.case_id, codes, ras.shape, ras.spacing, {v: int(counts[v]) for v in values}
            )
        )
        foreground: np.ndarray = (
            np.flatnonzero(volume.label.ravel() > 0)
            if volume.label is not None
            else np.zeros(0, dtype=np.intp)
        )
        if len(foreground) > FOREGROUND_SAMPLES_PER_CASE:
            foreground = rng.choice(foreground, FOREGROUND_SAMPLES_PER_CASE, replace=False)
        for c in range(volume.num_channels):
            samples[c].append(volume.image[c].ravel()[foreground].astype(np.float64))
    channels = tuple(
        _stats(name, np.concatenate(chunks))
        for name, chunks in zip(spec.channel_names, samples, strict=True)
    )
    return Fingerprint(
        dataset=spec.name,
        root=dataset.root,
        hash=dataset_fingerprint(dataset),
        channel_names=spec.channel_names,
        labels=dict(spec.labels),
        cases=tuple(geometries),
        channels=channels,
    )
