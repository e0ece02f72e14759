"""Reading a DICOM series into a volume, and writing a volume as a DICOM series.

The scanner-side runtime reads its input as a folder of single-frame DICOM files (one
series) and returns a :class:`DicomSeries`: the voxel array ``(X, Y, Z)`` with the modality
rescale applied, a RAS+ affine in mm (the NIfTI/nibabel convention, so the rest of medseg
treats it like a NIfTI volume) and the sorted pydicom datasets (the source images of a
DICOM SEG, see :mod:`medseg.runtime.io.dicom_seg`).

Axes: ``X`` = image columns, ``Y`` = image rows, ``Z`` = slices sorted by their position
along the slice normal (the cross product of the ImageOrientationPatient row and column
cosines). DICOM positions are LPS; the RAS affine is the LPS affine with its first two rows
negated.

:func:`medseg.runtime.io.dicom_write.write_dicom_series` writes a volume as a series the
other way round, for tests and the demo.

pydicom is imported through :func:`medseg.deps.require` at the point of use, so importing
this module costs only numpy. Every failure caused by the input is a
:class:`~medseg.errors.DatasetError` with a one-line message
``"<path>: <problem>; <what would be accepted>"``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.runtime.io.dicom_file import (
    ACCEPTED,
    check_image,
    fail,
    floats,
    pixels,
    read_file,
)

__all__ = ["LPS_FROM_RAS", "DicomSeries", "read_dicom_series"]

#: RAS <-> LPS: negate the first two world axes.
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Tolerance on ImageOrientationPatient cosines when checking that slices are parallel.
_IOP_TOL = 1e-4
#: Relative tolerance on slice gaps (and on the straightness of the slice positions).
_GAP_REL_TOL = 0.01
#: Two slices closer than this along the normal (mm) are at the same position.
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series read into memory.

    Attributes:
        data: voxel array ``(X, Y, Z)`` float32 with RescaleSlope/RescaleIntercept applied:
            ``X`` = columns, ``Y`` = rows, ``Z`` = slices sorted along the slice normal.
        affine: ``(4, 4)`` float64 voxel-to-world matrix in RAS+ mm (nibabel convention).
        spacing: voxel size in mm along ``(X, Y, Z)``; ``Z`` is the distance between
            consecutive slice positions (SliceThickness, SpacingBetweenSlices or 1.0 for a
            single slice).
        datasets: the pydicom ``Dataset`` of each slice, in ``Z`` order (the source images
            of a DICOM SEG). Their PixelData is removed to save memory (the pixels are in
            ``data``); every other attribute is kept.
        series_uid: SeriesInstanceUID (``""`` when the files have none).
        modality: Modality, e.g. ``"CT"`` or ``"MR"`` (``""`` when the files have none).
        folder: the folder that was read, or the single file when a file was given.
    """

    data: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    datasets: tuple[Any, ...]
    series_uid: str
    modality: str
    folder: Path

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)`` in voxels."""
        x, y, z = self.data.shape
        return int(x), int(y), int(z)


def _series_files(folder: Path) -> list[Path]:
    """Regular, non-hidden files of ``folder`` (no DICOMDIR), sorted by name."""
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    ]
    if not files:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
        where = (
            f"it holds only the subfolders {subfolders[:5]}"
            + (f" and {len(subfolders) - 5} more" if len(subfolders) > 5 else "")
            if subfolders
            else "the folder is empty"
        )
        raise fail(folder, f"no DICOM files ({where})", f"pass {ACCEPTED} (not a parent folder)")
    return sorted(files)


def _check_one_series(folder: Path, files: Sequence[Path], datasets: Sequence[Any]) -> None:
    uids = [str(ds.get("SeriesInstanceUID", "") or "") for ds in datasets]
    counts = Counter(uids)
    if len(counts) <= 1:
        return
    listed = ", ".join(
        f"{uid or '(no UID)'}: {n} file{'s' if n != 1 else ''}" for uid, n in counts.most_common(4)
    )
    more = f", and {len(counts) - 4} more" if len(counts) > 4 else ""
    raise fail(
        folder,
        f"files from {len(counts)} series ({listed}{more})",
        "a folder must hold one series: put each series in its own folder",
    )


def _slice_geometry(
    folder: Path, files: Sequence[Path], datasets: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Check and return (row cosine, column cosine, normal, pixel spacing, positions)."""
    iops: list[np.ndarray] = []
    spacings: list[np.ndarray] = []
    positions: list[np.ndarray] = []
    for path, ds in zip(files, datasets, strict=True):
        for keyword, count, into in (
            ("ImagePositionPatient", 3, positions),
            ("ImageOrientationPatient", 6, iops),
            ("PixelSpacing", 2, spacings),
        ):
            value = floats(ds, keyword, count, path)
            if value is None:
                raise fail(
                    path,
                    f"no {keyword}, needed to place the slices of a {len(files)}-slice series",
                    "pass an image series with patient geometry "
                    "(ImagePositionPatient, ImageOrientationPatient, PixelSpacing)",
                )
            into.append(value)
    for path, iop in zip(files, iops, strict=True):
        if np.max(np.abs(iop - iops[0])) > _IOP_TOL:
            raise fail(
                folder,
                f"mixed ImageOrientationPatient ({files[0].name}: {np.round(iops[0], 5).tolist()}"
                f", {path.name}: {np.round(iop, 5).tolist()})",
                "all slices of a series must be parallel (one orientation)",
            )
    for path, ps in zip(files, spacings, strict=True):
        if np.max(np.abs(ps - spacings[0])) > _IOP_TOL * max(1.0, float(np.max(spacings[0]))):
            raise fail(
                folder,
                f"mixed PixelSpacing ({files[0].name}: {spacings[0].tolist()}, "
                f"{path.name}: {ps.tolist()})",
                "all slices of a series must have the same pixel spacing",
            )
    return (*_cosines(files[0], iops[0]), spacings[0], positions)


def _cosines(path: Path, iop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row, col = iop[:3], iop[3:]
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    normal = np.cross(row, col)
    if nr < 1e-6 or nc < 1e-6 or float(np.linalg.norm(normal)) < 1e-6:
        raise fail(
            path,
            f"degenerate ImageOrientationPatient {np.round(iop, 5).tolist()}",
            "the row and column direction cosines must be non-zero and not parallel",
        )
    row, col = row / nr, col / nc
    normal = np.cross(row, col)
    return row, col, normal / float(np.linalg.norm(normal))


def _single_slice_geometry(ds: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """LPS affine columns for a one-slice series (defaults where geometry is missing)."""
    iop = floats(ds, "ImageOrientationPatient", 6, path)
    ipp = floats(ds, "ImagePositionPatient", 3, path)
    ps = floats(ds, "PixelSpacing", 2, path)
    if iop is None:
        iop = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    row, col, normal = _cosines(path, iop)
    ps = np.array([1.0, 1.0]) if ps is None else ps
    dz = 1.0
    for keyword in ("SliceThickness", "SpacingBetweenSlices"):
        value = ds.get(keyword)
        try:
            candidate = float(value) if value not in (None, "") else 0.0
        except (TypeError, ValueError):
            candidate = 0.0
        if np.isfinite(candidate) and candidate > 0:
            dz = candidate
            break
    lps = np.eye(4)
    lps[:3, 0] = row * float(ps[1])
    lps[:3, 1] = col * float(ps[0])
    lps[:3, 2] = normal * dz
    lps[:3, 3] = np.zeros(3) if ipp is None else ipp
    return lps, np.array([float(ps[1]), float(ps[0]), dz])


def read_dicom_series(path: str | Path) -> DicomSeries:
    """Read one DICOM series (a folder of single-frame files, or one file) into a volume.

    Every regular, non-hidden file of the folder is read (a file named ``DICOMDIR`` is
    skipped; subfolders are ignored); each must be a DICOM Part-10 file of the same series.
    Slices are sorted by the projection of ImagePositionPatient onto the slice normal.

    Args:
        path: a folder holding ONE series, or a single DICOM file (a one-slice series,
            ``Z = 1``, whose geometry defaults to identity orientation, origin 0 and 1 mm
            pixels where the file lacks it).

    Returns:
        The :class:`DicomSeries`: data ``(X, Y, Z)`` float32, RAS+ affine ``(4, 4)`` in mm.

    Raises:
        DatasetError: missing path, empty folder, a non-DICOM file, a file without pixel
            data, multi-frame or colour files, several series, mixed sizes, orientations or
            pixel spacings, missing geometry, duplicate slice positions or uneven slice gaps.
    """
    path = Path(path)
    if path.is_dir():
        files = _series_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise fail(path, "does not exist", f"pass {ACCEPTED}")

    datasets = [read_file(f) for f in files]
    for f, ds in zip(files, datasets, strict=True):
        check_image(ds, f)
    _check_one_series(path, files, datasets)
    slices = [pixels(ds, f) for f, ds in zip(files, datasets, strict=True)]

    sizes = Counter(s.shape for s in slices)
    if len(sizes) > 1:
        examples: dict[tuple[int, ...], str] = {}
        for f, s in zip(files, slices, strict=True):
            examples.setdefault(s.shape, f.name)
        listed = ", ".join(f"{rows}x{cols} (e.g. {examples[(cols, rows)]})" for cols, rows in sizes)
        raise fail(
            path,
            f"mixed image sizes Rows x Columns: {listed}",
            "all slices of a series must have the same Rows and Columns",
        )

    if len(files) == 1:
        lps, spacing_arr = _single_slice_geometry(datasets[0], files[0])
        order = [0]
    else:
        row, col, normal, ps, positions = _slice_geometry(path, files, datasets)
        proj = np.array([float(np.dot(p, normal)) for p in positions])
        order = [int(i) for i in np.argsort(proj, kind="stable")]
        sorted_proj = proj[order]
        gaps = np.diff(sorted_proj)
        k = int(np.argmin(gaps))
        if gaps[k] < _SAME_POSITION_MM:
            a, b = files[order[k]].name, files[order[k + 1]].name
            raise fail(
                path,
                f"two slices at the same position {np.round(positions[order[k]], 3).tolist()} "
                f"({a} and {b}; {len(files)} files)",
                "a series must hold each slice position once (remove duplicate files)",
            )
        gmin, gmax = float(gaps.min()), float(gaps.max())
        if gmax - gmin > _GAP_REL_TOL * gmax:
            raise fail(
                path,
                f"slice gaps are not uniform (min {gmin:.4g} mm, max {gmax:.4g} mm "
                f"over {len(files)} slices; missing slices?)",
                "a series must have evenly spaced slices (all its slices, one stack)",
            )
        first, last = positions[order[0]], positions[order[-1]]
        step = (last - first) / (len(files) - 1)
        deviation = max(
            float(np.linalg.norm(positions[i] - (first + n * step))) for n, i in enumerate(order)
        )
        if deviation > _GAP_REL_TOL * float(np.linalg.norm(step)) + _SAME_POSITION_MM:
            raise fail(
                path,
                f"slice positions do not lie on one straight line (off by up to "
                f"{deviation:.3g} mm)",
                "a series must be one stack of parallel, evenly spaced slices",
            )
        lps = np.eye(4)
        lps[:3, 0] = row * float(ps[1])
        lps[:3, 1] = col * float(ps[0])
        lps[:3, 2] = step
        lps[:3, 3] = first
        spacing_arr = np.array([float(ps[1]), float(ps[0]), float(np.linalg.norm(step))])

    data = np.stack([slices[i] for i in order], axis=-1).astype(np.float32, copy=False)
    kept = []
    for i in order:
        ds = datasets[i]
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                delattr(ds, keyword)
        kept.append(ds)
    first_ds = kept[0]
    return DicomSeries(
        data=data,
        affine=np.asarray(np.linalg.inv(LPS_FROM_RAS) @ lps, dtype=np.float64),
        spacing=(float(spacing_arr[0]), float(spacing_arr[1]), float(spacing_arr[2])),
        datasets=tuple(kept),
        series_uid=str(first_ds.get("SeriesInstanceUID", "") or ""),
        modality=str(first_ds.get("Modality", "") or ""),
        folder=path,
    )
