"""The training plan: geometry and normalisation chosen from a dataset fingerprint.

Rules (nnU-Net's 2D configuration, adapted to a fixed-patch deployment):

* **Orientation**: every case is reoriented to RAS first; spacings and shapes are RAS-ordered.
* **Slice axis**: the lowest-resolution axis (largest median spacing) when it is at least
  :data:`ANISOTROPY_RATIO` times the finest one (anisotropic data: slices are cut across the
  thick axis, never resampled along it); otherwise (near-isotropic data) the axis with the
  fewest median voxels, ties going to the last axis (axial for RAS).
* **Target spacing**: the median spacing of each of the two in-plane axes.
* **Patch**: each side the median in-plane shape after resampling to the target spacing,
  rounded up to a multiple of 32, at least 32, at most the cap (``--max-patch``, default
  256 x 256); larger slices are covered by the sliding window.
* **Batch size**: a budget of patch pixels per step that follows the training device
  (:mod:`medseg.plan.device`: GPU: :data:`BATCH_PIXEL_BUDGET`, memory-sized; CPU: a
  compute budget per core), between 2 and :data:`MAX_BATCH`, and at most 5 % of the
  dataset's resampled pixels per batch (nnU-Net's rule), but never below 2.
* **Normalisation**: channels named ``CT`` get the dataset-wide foreground 0.5/99.5
  percentile window and the foreground mean/std after clipping (z-score, nnU-Net's CT
  scheme); every other channel gets per-volume percentile clipping and z-score.
* **Mirroring**: both in-plane axes, like nnU-Net, unless a class name says left or right
  (mirroring would swap them): then none.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg import __version__
from medseg.atomic import atomic_file
from medseg.errors import ConfigError
from medseg.limits import check_batch
from medseg.plan.device import TrainingDevice
from medseg.plan.fingerprint import TRAINING_ORIENTATION, Fingerprint, compute_fingerprint
from medseg.schema import FORBID_EXTRA, StrictFloat, StrictInt, StrictStr, load_json, parse
from medseg.transforms.orientation import reorient_plan
from medseg.transforms.preprocessing import Recipe

__all__ = [
    "ANISOTROPY_RATIO",
    "BATCH_PIXEL_BUDGET",
    "DEFAULT_MAX_PATCH",
    "MAX_BATCH",
    "PATCH_MULTIPLE",
    "PLAN_VERSION",
    "Plan",
    "check_patch",
    "check_plan_matches",
    "load_plan",
    "make_plan",
    "plan_dataset",
    "save_plan",
]

PLAN_VERSION = 1
PATCH_MULTIPLE = 32
DEFAULT_MAX_PATCH = (256, 256)
ANISOTROPY_RATIO = 2.0
BATCH_PIXEL_BUDGET = 8 * 256 * 256
MAX_BATCH = 32
_LATERAL = re.compile(r"(^|[^a-z])(left|right|l|r)([^a-z]|$)", re.IGNORECASE)


def check_patch(patch: tuple[int, int], cap: tuple[int, int], what: str = "--patch") -> None:
    """Refuse a patch that is not two positive multiples of 32 or exceeds the cap."""
    if len(patch) != 2 or any(
        isinstance(p, bool) or not isinstance(p, int) or p < PATCH_MULTIPLE or p % PATCH_MULTIPLE
        for p in patch
    ):
        raise ConfigError(
            f"{what} {'x'.join(map(str, patch))} must be two multiples of {PATCH_MULTIPLE} "
            f"(>= {PATCH_MULTIPLE}), e.g. 192x224"
        )
    if patch[0] > cap[0] or patch[1] > cap[1]:
        raise ConfigError(
            f"{what} {patch[0]}x{patch[1]} exceeds the cap {cap[0]}x{cap[1]}; raise "
            "--max-patch (CPU memory grows with the patch) or choose a smaller patch"
        )


@dataclass(frozen=True)
class Plan:
    """A dataset's training plan (``plans.json``); see the module docstring for the rules.

    Attributes:
        dataset: dataset name.
        fingerprint: the dataset hash the plan was made from (refused on another dataset).
        channel_names: input channels in order.
        labels: class name -> label value.
        modality: ``"CT"`` or ``"MR"`` (anything not CT gets the per-volume z-score).
        slice_axis: RAS axis (0, 1, 2) the 2D slices are cut along.
        target_spacing: mm of the two in-plane axes, in axis order.
        patch_size: network ``(H, W)``, multiples of 32.
        batch_size: patches per training step.
        mirror_axes: slice axes (0 = H, 1 = W) training flips and TTA mirrors.
        ct_window: CT only: ``(lo, hi)`` foreground 0.5/99.5 percentiles.
        ct_zscore: CT only: ``(mean, std)`` of the clipped foreground.
        max_patch: the patch cap the plan was made with.
        orientation: voxel order cases are trained in (``"RAS"``).
        notes: each decision in one sentence.
        summary: the fingerprint summary (JSON-ready).
    """

    dataset: str
    fingerprint: str
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    modality: str
    slice_axis: int
    target_spacing: tuple[float, float]
    patch_size: tuple[int, int]
    batch_size: int
    mirror_axes: tuple[int, ...] = ()
    ct_window: tuple[float, float] | None = None
    ct_zscore: tuple[float, float] | None = None
    max_patch: tuple[int, int] = DEFAULT_MAX_PATCH
    orientation: str = TRAINING_ORIENTATION
    notes: tuple[str, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MR"):
            raise ConfigError(f"plan modality {self.modality!r} must be 'CT' or 'MR'")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"plan slice_axis {self.slice_axis} must be 0, 1 or 2")
        if len(self.target_spacing) != 2 or not all(
            math.isfinite(s) and 0 < s <= 50 for s in self.target_spacing
        ):
            raise ConfigError(
                f"plan target_spacing {self.target_spacing} must be two spacings in (0, 50] mm"
            )
        check_patch(self.max_patch, (10**6, 10**6), "max_patch")
        check_patch(self.patch_size, self.max_patch, "plan patch_size")
        check_batch(self.batch_size, "plan batch_size")
        try:
            reorient_plan(self.orientation, self.orientation)
        except ConfigError:
            raise ConfigError(
                f"plan orientation {self.orientation!r} must be axis codes: 3 letters with one "
                "of R/L, A/P and S/I each, e.g. 'RAS'"
            ) from None
        if any(a not in (0, 1) for a in self.mirror_axes):
            raise ConfigError(f"plan mirror_axes {self.mirror_axes} must be slice axes 0 or 1")
        if self.modality == "CT" and (self.ct_window is None or self.ct_zscore is None):
            raise ConfigError("a CT plan needs ct_window and ct_zscore")

    @property
    def inplane_axes(self) -> tuple[int, int]:
        """The two RAS axes of a slice, in volume order (H, W)."""
        a, b = (i for i in range(3) if i != self.slice_axis)
        return a, b

    def recipe(self, patch_size: tuple[int, int] | None = None) -> Recipe:
        """The preprocessing recipe (contract A, ``size_policy="window"``) of this plan."""
        return Recipe(
            modality="CT" if self.modality == "CT" else "MR",
            ct_window=self.ct_window,
            slice_axis=self.slice_axis,
            size_policy="window",
            patch_size=patch_size or self.patch_size,
            target_spacing=self.target_spacing,
            mirror_axes=self.mirror_axes,
            ct_zscore=self.ct_zscore,
        )

    def to_dict(self) -> dict[str, Any]:
        """The content of ``plans.json`` (also stored in the checkpoint and the manifest)."""
        return {
            "plan_version": PLAN_VERSION,
            "medseg_version": __version__,
            "dataset": {
                "name": self.dataset,
                "fingerprint": self.fingerprint,
                "channel_names": list(self.channel_names),
                "labels": dict(self.labels),
            },
            "configuration": {
                "modality": self.modality,
                "orientation": self.orientation,
                "slice_axis": self.slice_axis,
                "target_spacing": list(self.target_spacing),
                "patch_size": list(self.patch_size),
                "max_patch": list(self.max_patch),
                "batch_size": self.batch_size,
                "mirror_axes": list(self.mirror_axes),
                "ct_window": None if self.ct_window is None else list(self.ct_window),
                "ct_zscore": None if self.ct_zscore is None else list(self.ct_zscore),
            },
            "notes": list(self.notes),
            "fingerprint": self.summary,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "plan") -> Plan:
        """Inverse of :meth:`to_dict`; a bad or foreign file is one ConfigError line naming
        ``source`` and the key (``plans.json: configuration.patch_size[0] must be an integer``)."""
        version = data.get("plan_version") if isinstance(data, dict) else None
        if version != PLAN_VERSION:
            raise ConfigError(
                f"{source}: plan_version {version!r} is not supported; expected {PLAN_VERSION} "
                "(write a plan with: medseg plan DATASET --out plans.json)"
            )
        file = parse(_PlanFile, data, source)
        ds, cfg = file.dataset, file.configuration
        try:
            return cls(
                dataset=ds.name,
                fingerprint=ds.fingerprint,
                channel_names=ds.channel_names,
                labels=dict(ds.labels),
                modality=cfg.modality,
                slice_axis=cfg.slice_axis,
                target_spacing=cfg.target_spacing,
                patch_size=cfg.patch_size,
                batch_size=cfg.batch_size,
                mirror_axes=cfg.mirror_axes,
                ct_window=cfg.ct_window,
                ct_zscore=cfg.ct_zscore,
                max_patch=cfg.max_patch,
                orientation=cfg.orientation,
                notes=file.notes,
                summary=dict(file.fingerprint),
            )
        except ConfigError as exc:  # a cross-field rule of __post_init__
            raise ConfigError(f"{source}: configuration: {exc}") from None


@dataclass(frozen=True)
class _PlanDataset:
    """``plans.json`` ``dataset`` section."""

    __pydantic_config__ = FORBID_EXTRA
    name: StrictStr
    fingerprint: StrictStr
    channel_names: tuple[StrictStr, ...]
    labels: dict[str, StrictInt]


@dataclass(frozen=True)
class _PlanConfiguration:
    """``plans.json`` ``configuration`` section (the rules: :class:`Plan`)."""

    __pydantic_config__ = FORBID_EXTRA
    modality: StrictStr
    slice_axis: StrictInt
    target_spacing: tuple[StrictFloat, StrictFloat]
    patch_size: tuple[StrictInt, StrictInt]
    max_patch: tuple[StrictInt, StrictInt]
    batch_size: StrictInt
    mirror_axes: tuple[StrictInt, ...] = ()
    ct_window: tuple[StrictFloat, StrictFloat] | None = None
    ct_zscore: tuple[StrictFloat, StrictFloat] | None = None
    orientation: StrictStr = TRAINING_ORIENTATION


@dataclass(frozen=True)
class _PlanFile:
    """The layout of ``plans.json`` (:meth:`Plan.to_dict`), validated by :func:`parse`."""

    __pydantic_config__ = FORBID_EXTRA
    plan_version: StrictInt
    dataset: _PlanDataset
    configuration: _PlanConfiguration
    medseg_version: StrictStr = ""
    notes: tuple[StrictStr, ...] = ()
    fingerprint: dict[str, Any] = field(default_factory=dict)


def _slice_axis(spacing: np.ndarray, shape: np.ndarray) -> tuple[int, str]:
    coarse, fine = float(spacing.max()), float(spacing.min())
    if coarse >= ANISOTROPY_RATIO * fine:
        axis = int(np.argmax(spacing))
        return axis, (
            f"slice axis {axis} ({'xyz'[axis]}): the lowest-resolution axis ({coarse:.2f} mm "
            f"median, >= {ANISOTROPY_RATIO:g}x the finest {fine:.2f} mm); no resampling along it"
        )
    axis = int(2 - np.argmin(shape[::-1]))  # fewest voxels; ties go to the last axis
    return axis, (
        f"slice axis {axis} ({'xyz'[axis]}): near-isotropic spacing (max/min "
        f"{coarse / fine:.2f} < {ANISOTROPY_RATIO:g}), the axis with the fewest voxels "
        f"({int(shape[axis])} median)"
    )


def make_plan(
    fingerprint: Fingerprint,
    max_patch: tuple[int, int] = DEFAULT_MAX_PATCH,
    batch_pixel_budget: int = BATCH_PIXEL_BUDGET,
    device: TrainingDevice | None = None,
) -> Plan:
    """Choose the plan of a fingerprinted dataset (rules in the module docstring).

    Args:
        fingerprint: from :func:`~medseg.plan.fingerprint.compute_fingerprint`.
        max_patch: cap of the patch ``(H, W)``, multiples of 32.
        batch_pixel_budget: patch pixels per training step the GPU memory allows.
        device: the training device (``None``: a GPU; a CPU gets a smaller compute budget).
    """
    check_patch(max_patch, (10**6, 10**6), "--max-patch")
    batch_pixel_budget, budget_note = (device or TrainingDevice("cuda")).pixel_budget(
        batch_pixel_budget
    )
    if batch_pixel_budget < 2 * PATCH_MULTIPLE**2:
        raise ConfigError(f"batch pixel budget {batch_pixel_budget} is too small")
    spacings, shapes = fingerprint.spacings, fingerprint.shapes
    median_spacing = np.median(spacings, axis=0)
    median_shape = np.median(shapes, axis=0)
    axis, axis_note = _slice_axis(median_spacing, median_shape)
    inplane = [i for i in range(3) if i != axis]
    target = tuple(float(round(median_spacing[i], 6)) for i in inplane)
    resampled = np.median(shapes[:, inplane] * spacings[:, inplane] / np.array(target), axis=0)
    patch = tuple(
        int(min(cap, max(PATCH_MULTIPLE, math.ceil(size / PATCH_MULTIPLE) * PATCH_MULTIPLE)))
        for size, cap in zip(resampled, max_patch, strict=True)
    )
    pixels = patch[0] * patch[1]
    total = float(np.sum(shapes[:, axis] * np.prod(shapes[:, inplane] * spacings[:, inplane], 1)))
    total /= target[0] * target[1]
    batch = int(np.clip(batch_pixel_budget // pixels, 2, MAX_BATCH))
    batch = max(2, min(batch, int(0.05 * total / pixels)))
    notes = [
        f"orientation: cases reoriented to {TRAINING_ORIENTATION} before slicing (source "
        f"orders: {', '.join(sorted({c.orientation for c in fingerprint.cases}))})",
        axis_note,
        f"target in-plane spacing {target[0]:.3f} x {target[1]:.3f} mm (median of training "
        "spacings)",
        f"patch {patch[0]}x{patch[1]}: median resampled slice {resampled[0]:.0f}x"
        f"{resampled[1]:.0f} rounded up to multiples of {PATCH_MULTIPLE}, cap "
        f"{max_patch[0]}x{max_patch[1]}",
        f"batch {batch}: {budget_note}; 2..{MAX_BATCH}, at most 5 % of the dataset's pixels",
    ]
    is_ct = [n.upper() == "CT" for n in fingerprint.channel_names]
    if any(is_ct) and not all(is_ct):
        raise ConfigError(
            f"{fingerprint.root}/dataset.json mixes CT and non-CT channels "
            f"{list(fingerprint.channel_names)}; one normalisation per dataset is supported"
        )
    ct_window = ct_zscore = None
    if all(is_ct):
        stats = fingerprint.channels
        lo = min(float(s.percentile_00_5) for s in stats)
        hi = max(float(s.percentile_99_5) for s in stats)
        mean = float(np.mean([s.clipped_mean for s in stats]))
        std = max(float(np.mean([s.clipped_std for s in stats])), 1e-6)
        ct_window, ct_zscore = (lo, hi), (mean, std)
        notes.append(
            f"CT: window [{lo:.1f}, {hi:.1f}] (foreground 0.5/99.5 percentiles over all cases), "
            f"then z-score with mean {mean:.2f}, std {std:.2f}"
        )
    else:
        notes.append("MR/other: per-volume 0.5/99.5 percentile clip and z-score, per channel")
    lateral = [n for n in fingerprint.labels if _LATERAL.search(n.replace("_", " "))]
    mirror: tuple[int, ...] = () if lateral else (0, 1)
    notes.append(
        f"no mirroring: class names {lateral} are lateral (a flip swaps them)"
        if lateral
        else "mirroring along both in-plane axes (training flips, --tta mirrors)"
    )
    return Plan(
        dataset=fingerprint.dataset,
        fingerprint=fingerprint.hash,
        channel_names=fingerprint.channel_names,
        labels=dict(fingerprint.labels),
        modality="CT" if all(is_ct) else "MR",
        slice_axis=axis,
        target_spacing=(target[0], target[1]),
        patch_size=(patch[0], patch[1]),
        batch_size=batch,
        mirror_axes=mirror,
        ct_window=ct_window,
        ct_zscore=ct_zscore,
        max_patch=max_patch,
        notes=tuple(notes),
        summary={
            **fingerprint.to_dict(),
            "median_resampled_inplane": [float(r) for r in resampled],
        },
    )


def plan_dataset(
    dataset_dir: Path,
    max_patch: tuple[int, int] = DEFAULT_MAX_PATCH,
    device: TrainingDevice | None = None,
) -> Plan:
    """Fingerprint a dataset folder and plan it (``medseg plan``)."""
    check_patch(max_patch, (10**6, 10**6), "--max-patch")  # before reading any file
    return make_plan(compute_fingerprint(Path(dataset_dir)), max_patch, device=device)


def save_plan(plan: Plan, path: Path, force: bool = False, dataset: Path | None = None) -> Path:
    """Write ``plans.json`` atomically, through the output guard (:mod:`medseg.outputs`).

    An existing ``path`` is replaced only with ``force`` and only when it is a JSON file;
    never inside ``dataset``, the folder it was planned from.
    """
    from medseg.outputs import Input, Output, guard

    guard([Output("path", Path(path), "json")], [Input("dataset", dataset)], force=force)
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
    return Path(path)


def load_plan(path: Path) -> Plan:
    """Read a ``plans.json``; ConfigError naming the file when it is missing or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"plan file {path} does not exist; write it with medseg plan")
    return Plan.from_dict(load_json(path, "plan file"), str(path))


def check_plan_matches(
    plan: Plan,
    fingerprint_hash: str,
    spec_channels: tuple[str, ...],
    spec_labels: dict[str, int],
    dataset: str,
    force: bool = False,
    source: str = "the plan",
) -> None:
    """Refuse a plan made for another dataset (unless ``force``) or incompatible with it.

    Channels and labels must always agree; a different dataset hash (other files, or the
    same dataset changed since planning) is refused unless ``force``.
    """
    if tuple(plan.channel_names) != tuple(spec_channels):
        raise ConfigError(
            f"{source} was made for channels {list(plan.channel_names)}; {dataset} has "
            f"{list(spec_channels)}: re-plan with medseg plan {dataset}"
        )
    if dict(plan.labels) != dict(spec_labels):
        raise ConfigError(
            f"{source} was made for labels {plan.labels}; {dataset} has {spec_labels}: re-plan "
            f"with medseg plan {dataset}"
        )
    if plan.fingerprint != fingerprint_hash and not force:
        raise ConfigError(
            f"{source} was made for dataset {plan.dataset!r} with fingerprint "
            f"{plan.fingerprint}; {dataset} has fingerprint {fingerprint_hash} (other or changed "
            f"files): re-plan with medseg plan {dataset}, or pass --force to use it anyway"
        )
