"""Integrity check of an nnU-Net raw dataset folder: what ``medseg data check DATASET`` runs.

Like nnU-Net's ``verify_dataset_integrity``, but it reports every problem at once in one
line, and on success returns a :class:`DatasetReport` (cases, spacings, shapes, label voxel
counts, intensity ranges); ``medseg.cli.tables.dataset_report`` draws it as tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.nnunet import (
    SUBSETS,
    Subset,
    format_problems,
    read_case,
    read_dataset_json,
    scan_cases,
)
from medseg.errors import ConfigError, DatasetError

__all__ = [
    "CaseSummary",
    "DatasetReport",
    "IntensityStats",
    "check_dataset",
]

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class CaseSummary:
    """Geometry of one case.

    Attributes:
        case_id: the case name.
        subset: ``"train"`` or ``"test"``.
        shape: voxels along ``(X, Y, Z)``.
        spacing: voxel size in mm along ``(X, Y, Z)``.
        labelled: whether the case has a label map.
    """

    case_id: str
    subset: Subset
    shape: tuple[int, int, int]
    spacing: Triple
    labelled: bool


@dataclass(frozen=True)
class IntensityStats:
    """Foreground intensity range of one input channel (``None`` when no foreground voxel).

    Attributes:
        channel: the channel name.
        min, max: exact extremes over all foreground voxels.
        p0_5, median, p99_5: 0.5th, 50th and 99.5th percentiles of the voxel sample.
        num_voxels: foreground voxels over all cases.
        num_samples: voxels in the sample the percentiles come from.
    """

    channel: str
    min: float | None
    p0_5: float | None
    median: float | None
    p99_5: float | None
    max: float | None
    num_voxels: int
    num_samples: int


@dataclass(frozen=True)
class DatasetReport:
    """Summary of a dataset that passed :func:`check_dataset`.

    Attributes:
        name: dataset name from dataset.json.
        root: the dataset folder.
        num_train_cases, num_test_cases: number of checked training and test cases.
        channel_names: input channels in order.
        labels: class name -> value.
        label_voxels: class name -> voxel count over all labelled checked cases.
        cases: geometry of every checked case, sorted by subset then id.
        spacing_min, spacing_median, spacing_max: per axis ``(X, Y, Z)`` in mm over the
            cases (``None`` when there is no case).
        intensities: foreground intensity range per channel.
    """

    name: str
    root: Path
    num_train_cases: int
    num_test_cases: int
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    label_voxels: dict[str, int]
    cases: tuple[CaseSummary, ...]
    spacing_min: Triple | None
    spacing_median: Triple | None
    spacing_max: Triple | None
    intensities: tuple[IntensityStats, ...]

    @property
    def spacings(self) -> dict[str, Triple]:
        """Case id -> voxel spacing in mm."""
        return {c.case_id: c.spacing for c in self.cases}

    @property
    def shapes(self) -> dict[str, tuple[int, int, int]]:
        """Case id -> shape in voxels."""
        return {c.case_id: c.shape for c in self.cases}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary of the report.

        ``"labels"`` maps each class name to its voxel count (classes in value order);
        ``"label_values"`` maps it to its value.
        """

        def triple(value: Triple | None) -> list[float] | None:
            return None if value is None else list(value)

        return {
            "name": self.name,
            "root": str(self.root),
            "num_train_cases": self.num_train_cases,
            "num_test_cases": self.num_test_cases,
            "channel_names": list(self.channel_names),
            "labels": {name: self.label_voxels.get(name, 0) for name in self.labels},
            "label_values": dict(self.labels),
            "spacing": {
                "min": triple(self.spacing_min),
                "median": triple(self.spacing_median),
                "max": triple(self.spacing_max),
            },
            "cases": [
                {
                    "case_id": c.case_id,
                    "subset": c.subset,
                    "shape": list(c.shape),
                    "spacing": list(c.spacing),
                    "labelled": c.labelled,
                }
                for c in self.cases
            ],
            "intensities": [
                {
                    "channel": s.channel,
                    "min": s.min,
                    "p0_5": s.p0_5,
                    "median": s.median,
                    "p99_5": s.p99_5,
                    "max": s.max,
                    "num_voxels": s.num_voxels,
                    "num_samples": s.num_samples,
                }
                for s in self.intensities
            ],
        }


class _IntensityAccumulator:
    """Running foreground min/max and a voxel sample per channel."""

    def __init__(self, channels: Sequence[str], per_case: int, seed: int) -> None:
        self.channels = tuple(channels)
        self.per_case = per_case
        self.rng = np.random.default_rng(seed)
        self.lo = [np.inf] * len(channels)
        self.hi = [-np.inf] * len(channels)
        self.count = 0
        self.samples: list[list[np.ndarray]] = [[] for _ in channels]

    def add(self, image: np.ndarray, label: np.ndarray | None) -> None:
        """Add one case: ``image`` ``(C, X, Y, Z)``, ``label`` ``(X, Y, Z)`` or ``None``."""
        mask = label > 0 if label is not None else np.any(image != 0, axis=0)
        index = np.flatnonzero(mask)
        if index.size == 0:
            return
        self.count += int(index.size)
        pick = self.rng.choice(index, size=min(self.per_case, index.size), replace=False)
        for c in range(image.shape[0]):
            flat = image[c].ravel()
            values = flat[index]
            self.lo[c] = min(self.lo[c], float(values.min()))
            self.hi[c] = max(self.hi[c], float(values.max()))
            self.samples[c].append(flat[pick])

    def result(self) -> tuple[IntensityStats, ...]:
        stats = []
        for c, name in enumerate(self.channels):
            if not self.samples[c]:
                stats.append(IntensityStats(name, None, None, None, None, None, 0, 0))
                continue
            pooled = np.concatenate(self.samples[c]).astype(np.float64)
            p0_5, median, p99_5 = (float(v) for v in np.percentile(pooled, [0.5, 50.0, 99.5]))
            stats.append(
                IntensityStats(
                    name, self.lo[c], p0_5, median, p99_5, self.hi[c], self.count, pooled.size
                )
            )
        return tuple(stats)


def _triple(values: np.ndarray) -> Triple:
    x, y, z = (float(v) for v in values)
    return x, y, z


def check_dataset(
    root: str | Path,
    subsets: Sequence[Subset] = SUBSETS,
    samples_per_case: int = 10_000,
    seed: int = 0,
) -> DatasetReport:
    """Check an nnU-Net raw dataset folder completely; raise once with every problem.

    Verified, in this order (each case file is read once):

    1. dataset.json exists, is JSON, has ``channel_names``, ``labels``, ``numTraining``,
       ``file_ending`` in the accepted forms (NIfTI endings only, one integer value per
       class, consecutive from background 0). If it is invalid the check stops there,
       since the files cannot be interpreted without it.
    2. File layout: imagesTr exists; ``numTraining`` equals the number of training cases;
       every case has every channel file; every training case has a label file; no stray
       file in imagesTr/imagesTs (not ``<case>_<XXXX><ending>``, or a channel not in
       ``channel_names``) or labelsTr/labelsTs; no label file without images.
    3. Every file of every case reads as a 3D NIfTI (not corrupt, not truncated, positive
       spacing); channels and label share one shape and one affine (1e-3 mm); no NaN/Inf
       voxel; label values are integers listed in ``labels``.

    Intensity ranges are computed per channel over foreground voxels: label > 0 for a
    labelled case, any channel nonzero for a case without label. Min and max are exact;
    the percentiles come from up to ``samples_per_case`` foreground voxels per case drawn
    without replacement (numpy ``default_rng(seed)``, so the report is reproducible).

    Args:
        root: the dataset folder.
        subsets: which subsets to check, ``("train", "test")`` by default.
        samples_per_case: foreground voxels sampled per case for the percentiles.
        seed: seed of the voxel sampling.

    Returns:
        The report (on success only).

    Raises:
        DatasetError: one line, ``"dataset ROOT has N problems: ...; ..."``, grouping the
            problems by kind and naming the files relative to ROOT (the first 5 of each
            kind, then how many more).
        ConfigError: an unknown subset or a non-positive ``samples_per_case``.
    """
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown or not subsets:
        raise ConfigError(
            f"unknown subsets {unknown or list(subsets)}; expected 'train' and/or 'test'"
        )
    if samples_per_case < 1:
        raise ConfigError(f"samples_per_case must be at least 1, got {samples_per_case}")
    spec = read_dataset_json(root)
    cases, issues = scan_cases(spec, subsets)
    issues = list(issues)
    voxels = np.zeros(spec.num_classes, dtype=np.int64)
    summaries: list[CaseSummary] = []
    intensity = _IntensityAccumulator(spec.channel_names, samples_per_case, seed)
    for subset in subsets:
        for case in cases[subset]:
            volume, case_issues = read_case(spec, case)
            issues += case_issues
            if volume is None:
                continue
            labelled = volume.label is not None
            if volume.label is not None:
                counts = np.bincount(volume.label.ravel(), minlength=spec.num_classes)
                voxels += counts[: spec.num_classes]
            intensity.add(volume.image, volume.label)
            summaries.append(
                CaseSummary(case.case_id, subset, volume.shape, volume.spacing, labelled)
            )
    if issues:
        raise DatasetError(format_problems(spec.root, issues))
    spacing = np.array([c.spacing for c in summaries], dtype=np.float64).reshape(-1, 3)
    has_cases = len(summaries) > 0
    return DatasetReport(
        name=spec.name,
        root=spec.root,
        num_train_cases=len(cases.get("train", ())),
        num_test_cases=len(cases.get("test", ())),
        channel_names=spec.channel_names,
        labels=dict(spec.labels),
        label_voxels={name: int(voxels[v]) for name, v in spec.labels.items()},
        cases=tuple(summaries),
        spacing_min=_triple(spacing.min(axis=0)) if has_cases else None,
        spacing_median=_triple(np.median(spacing, axis=0)) if has_cases else None,
        spacing_max=_triple(spacing.max(axis=0)) if has_cases else None,
        intensities=intensity.result(),
    )
