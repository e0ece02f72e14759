"""A multi-case test dataset derived from the embedded MNI152 template (no downloads).

``write_mni152_cohort(out, cases=N, seed=S)`` writes N cases in the nnU-Net raw layout, each
an acquisition of the SAME template anatomy with its own geometry and contrast:

* in-plane spacing (uniform in ``inplane_mm``, square pixels) and slice thickness (uniform
  in ``thickness_mm``) along the world S axis, resampled from the 1 mm template with a
  Gaussian slice profile (FWHM = the thickness) and cubic interpolation;
* a field of view: the head's bounding box with a random margin per side (negative margins
  crop into the head);
* a voxel order (RAS, LPS, LAS, RPI, ... some with permuted axes), cycled over the cases
  from a seeded start, with an affine that puts every case at the template's world position;
* a smooth multiplicative bias field, a gamma contrast curve and a scanner scale, Rician
  noise; stored as int16 like a scanner's magnitude images.

Labels (background, CSF, GM, WM) go through the same geometry (nearest neighbour at the same
voxel centres), so they stay exact class indices. ``cohort.json`` records each case's
parameters. It is ONE template brain: a model that does well on it has learnt to handle
geometry and contrast, not anatomical variation between patients.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir
from medseg.data.mni152 import MNI152_LABELS, mni152_volume
from medseg.data.nifti import save_nifti
from medseg.errors import ConfigError
from medseg.outputs import Output, guard, write_marker
from medseg.transforms.orientation import reorient_affine, to_orientation

__all__ = ["COHORT_ORIENTATIONS", "CohortCase", "write_mni152_cohort"]

#: Voxel orders the cohort cycles through (the last ones permute the axes).
COHORT_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "LPI", "RSP", "PIR", "ASL")
_CASE = "MNIC_{:03d}"


@dataclass(frozen=True)
class CohortCase:
    """The acquisition parameters of one cohort case (as written to ``cohort.json``)."""

    case_id: str
    inplane_mm: float
    thickness_mm: float
    orientation: str
    shape: tuple[int, int, int]
    margins_mm: tuple[float, ...]
    gamma: float
    scale: float
    bias_strength: float
    noise_fraction: float


def _check_range(name: str, value: tuple[float, float]) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= 50):
        raise ConfigError(f"{name} {value} must be (lo, hi) with 0 < lo <= hi <= 50 mm")


def _bias_field(shape: tuple[int, int, int], strength: float, rng: np.random.Generator) -> Any:
    grids = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape), indexing="ij")
    terms = [*grids, *(g * g - 1.0 / 3.0 for g in grids), grids[0] * grids[1]]
    log_field = sum(rng.normal(0.0, 1.0) * t for t in terms)
    span = float(np.abs(log_field).max()) or 1.0
    return np.exp(log_field * (math.log1p(strength) / span))


def _acquire(
    t1: np.ndarray,
    label: np.ndarray,
    affine: np.ndarray,
    case_id: str,
    orientation: str,
    inplane: tuple[float, float],
    thickness: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, CohortCase]:
    from scipy import ndimage

    spacing_in = float(rng.uniform(*inplane))
    slice_mm = float(rng.uniform(*thickness))
    spacing = np.array([spacing_in, spacing_in, slice_mm])
    head = np.argwhere(t1 > 0)
    lo_vox, hi_vox = head.min(axis=0), head.max(axis=0)
    margins = np.concatenate([rng.uniform(-4, 20, 4), rng.uniform(-6, 12, 2)])
    world_lo = affine[:3, :3] @ lo_vox + affine[:3, 3] - margins[[0, 2, 4]]
    world_hi = affine[:3, :3] @ hi_vox + affine[:3, 3] + margins[[1, 3, 5]]
    nx, ny, nz = (int(n) for n in np.maximum(np.ceil((world_hi - world_lo) / spacing), 8))
    shape = (nx, ny, nz)
    # slice profile: Gaussian with FWHM = the voxel size, in template voxels (1 mm)
    sigma = np.maximum(spacing - 1.0, 0.0) / 2.3548
    smooth = ndimage.gaussian_filter(t1.astype(np.float32), sigma, mode="constant")
    axes = [world_lo[i] + spacing[i] * np.arange(shape[i]) for i in range(3)]
    world = np.stack(np.meshgrid(*axes, indexing="ij"), axis=0).reshape(3, -1)
    inverse = np.linalg.inv(affine)
    coords = inverse[:3, :3] @ world + inverse[:3, 3:4]
    image = ndimage.map_coordinates(smooth, coords, order=3, mode="constant").reshape(shape)
    labels = ndimage.map_coordinates(label, coords, order=0, mode="constant").reshape(shape)
    gamma = float(rng.uniform(0.7, 1.5))
    scale = float(rng.uniform(400.0, 3000.0))
    bias = float(rng.uniform(0.1, 0.35))
    noise = float(rng.uniform(0.01, 0.04))
    signal = np.clip(image / 255.0, 0.0, None) ** gamma * scale * _bias_field(shape, bias, rng)
    real = signal + rng.normal(0.0, noise * scale, shape)
    imag = rng.normal(0.0, noise * scale, shape)
    magnitude = np.sqrt(real * real + imag * imag)
    ras_affine = np.diag([*spacing, 1.0])
    ras_affine[:3, 3] = world_lo
    data = np.ascontiguousarray(to_orientation(magnitude, "RAS", orientation))
    lab = np.ascontiguousarray(to_orientation(labels.astype(np.uint8), "RAS", orientation))
    out_affine = reorient_affine(ras_affine, shape, "RAS", orientation)
    record = CohortCase(
        case_id,
        round(spacing_in, 4),
        round(slice_mm, 4),
        orientation,
        (int(data.shape[0]), int(data.shape[1]), int(data.shape[2])),
        tuple(round(float(m), 2) for m in margins),
        round(gamma, 4),
        round(scale, 2),
        round(bias, 4),
        round(noise, 4),
    )
    return np.round(data).astype(np.int16), lab, out_affine, record


def write_mni152_cohort(
    out_dir: Path,
    cases: int = 12,
    seed: int = 0,
    inplane_mm: tuple[float, float] = (0.7, 1.6),
    thickness_mm: tuple[float, float] = (1.0, 6.0),
    force: bool = False,
) -> list[CohortCase]:
    """Write the cohort dataset atomically (see the module docstring).

    Args:
        out_dir: target folder; its parent must exist.
        cases: number of cases, 1..500.
        seed: the same seed gives the same files.
        inplane_mm: range of the in-plane spacing.
        thickness_mm: range of the slice thickness.
        force: replace a non-empty ``out_dir`` (once the new dataset is complete).

    Returns:
        The parameters of each case.
    """
    if isinstance(cases, bool) or not isinstance(cases, int) or not 1 <= cases <= 500:
        raise ConfigError(f"--cases {cases!r} must be an integer in 1..500")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ConfigError(f"--seed {seed!r} must be an integer in 0..{2**32 - 1}")
    _check_range("in-plane spacing range", inplane_mm)
    _check_range("slice thickness range", thickness_mm)
    out_dir = Path(out_dir)
    guard([Output("out_dir", out_dir, "dataset")], force=force)
    t1, label, affine = mni152_volume()
    start = int(np.random.default_rng(seed).integers(len(COHORT_ORIENTATIONS)))
    records: list[CohortCase] = []
    with atomic_dir(out_dir) as tmp:
        write_marker(tmp, "dataset", "medseg data mni152-cohort")
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for i in range(cases):
            case_id = _CASE.format(i + 1)
            orientation = COHORT_ORIENTATIONS[(start + i) % len(COHORT_ORIENTATIONS)]
            rng = np.random.default_rng([seed, i])
            image, lab, aff, record = _acquire(
                t1, label, affine, case_id, orientation, inplane_mm, thickness_mm, rng
            )
            save_nifti(tmp / "imagesTr" / f"{case_id}_0000.nii.gz", image, aff)
            save_nifti(tmp / "labelsTr" / f"{case_id}.nii.gz", lab, aff)
            records.append(record)
        dataset_json = {
            "name": "MNI152-cohort",
            "description": (
                f"{cases} synthetic acquisitions of ONE template brain (MNI ICBM152 2009a), each "
                "with its own spacing, slice thickness, field of view, voxel order, bias field, "
                "contrast and noise; not a patient cohort: anatomy does not vary"
            ),
            "reference": "MNI ICBM152 2009a nonlinear symmetric template (Fonov et al., 2011)",
            "channel_names": {"0": "T1"},
            "labels": MNI152_LABELS,
            "numTraining": cases,
            "file_ending": ".nii.gz",
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
        cohort = {"seed": seed, "cases": [dict(r.__dict__) for r in records]}
        (tmp / "cohort.json").write_text(json.dumps(cohort, indent=2) + "\n")
    return records
