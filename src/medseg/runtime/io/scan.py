"""Scans in, masks out: NIfTI files or a DICOM series folder; NIfTI masks and DICOM SEG.

:func:`load_scan` reads what a scanner-side user points ``medseg infer`` at: one NIfTI file
per input channel (nnU-Net style ``case_0000.nii.gz``, ``case_0001.nii.gz``...) or a folder
holding one DICOM series (or a single DICOM file). :func:`write_outputs` writes the mask with
the input's affine and header, the probabilities on request, and a DICOM SEG referencing the
source images when the input was DICOM. Every output is checked before anything runs and
written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import check_parent_exists
from medseg.data.nifti import constant_volume_problem, is_nifti_path, load_nifti, save_nifti
from medseg.errors import ConfigError, DatasetError
from medseg.options import check_not_an_input

__all__ = ["OutputPaths", "Scan", "load_scan", "plan_outputs", "write_outputs"]


@dataclass(frozen=True)
class Scan:
    """A scan ready for :meth:`~medseg.runtime.Segmenter.segment`.

    Attributes:
        image: ``(C, X, Y, Z)`` float32 intensities (DICOM: rescale slope/intercept applied).
        affine: ``(4, 4)`` voxel -> world matrix, RAS+ mm (the NIfTI convention).
        spacing: voxel size in mm along ``(X, Y, Z)``.
        source: the file(s) or folder, for messages.
        header: the first NIfTI file's header (kept on the written mask), or ``None``.
        dicom: the DICOM series (``medseg.runtime.io.dicom.DicomSeries``), or ``None``.
        inputs: the files that were read (every NIfTI channel, every DICOM slice file), so
            that no output can replace one of them.
    """

    image: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source: str
    header: Any = None
    dicom: Any = field(default=None, repr=False)
    inputs: tuple[Path, ...] = field(default=(), repr=False)

    @property
    def is_dicom(self) -> bool:
        return self.dicom is not None

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def load_scan(inputs: Sequence[str | Path]) -> Scan:
    """Read one DICOM series (a folder or one file) or one NIfTI file per channel.

    Raises:
        DatasetError: unreadable files, NIfTI channels with different shapes or affines,
            DICOM mixed with NIfTI, or several DICOM inputs.
    """
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("no input given; expected a NIfTI file, or a DICOM series folder")
    for path in paths:
        if not path.exists():
            raise DatasetError(f"{path}: does not exist; expected a NIfTI file or a DICOM folder")
    if all(is_nifti_path(p) and p.is_file() for p in paths):
        return _load_nifti_channels(paths)
    if len(paths) > 1:
        raise DatasetError(
            f"{', '.join(map(str, paths))}: several inputs must all be NIfTI files (one per "
            "channel); a DICOM series is given as one folder"
        )
    from medseg.runtime.io.dicom import read_dicom_series

    series = read_dicom_series(paths[0])
    _refuse_constant(series.data, paths[0])
    _refuse_spacing(series.spacing, paths[0])
    return Scan(
        image=series.data[None].astype(np.float32, copy=False),
        affine=series.affine,
        spacing=series.spacing,
        source=str(paths[0]),
        dicom=series,
        inputs=tuple(
            Path(ds.filename) for ds in series.datasets if isinstance(ds.filename, (str, Path))
        )
        or (paths[0],),
    )


def _refuse_constant(data: np.ndarray, path: Path) -> None:
    problem = constant_volume_problem(data)
    if problem is not None:
        raise DatasetError(f"{path}: {problem}")


def _refuse_spacing(spacing: tuple[float, float, float], path: Path) -> None:
    """A voxel size above :data:`MAX_SPACING_MM` is refused here, naming the file (the
    resampler would refuse it later without knowing which file it came from)."""
    from medseg.transforms.preprocessing import MAX_SPACING_MM

    if not all(np.isfinite(s) and 0.0 < s <= MAX_SPACING_MM for s in spacing):
        shown = tuple(round(float(s), 4) for s in spacing)
        raise DatasetError(
            f"{path}: voxel spacing {shown} mm; accepted: finite sizes above 0 and at most "
            f"{MAX_SPACING_MM:g} mm per axis (a header in cm or m? check the export)"
        )


def _load_nifti_channels(paths: list[Path]) -> Scan:
    first = load_nifti(paths[0])
    channels = [first.data]
    for path in paths[1:]:
        other = load_nifti(path)
        if other.shape != first.shape or not np.allclose(other.affine, first.affine, atol=1e-4):
            raise DatasetError(
                f"{path}: shape {other.shape} / affine differ from {paths[0]} {first.shape}; "
                "the channels of one scan must share their grid"
            )
        channels.append(other.data)
    for path, channel in zip(paths, channels, strict=True):
        _refuse_constant(channel, path)
    _refuse_spacing(first.spacing, paths[0])
    image = np.stack([np.asarray(c, dtype=np.float32) for c in channels])
    source = str(paths[0]) if len(paths) == 1 else ", ".join(map(str, paths))
    return Scan(
        image, first.affine, first.spacing, source, header=first.header, inputs=tuple(paths)
    )


@dataclass(frozen=True)
class OutputPaths:
    """Where :func:`write_outputs` writes.

    Attributes:
        mask: the label map, NIfTI.
        probabilities: ``(X, Y, Z, K)`` float32 NIfTI, or ``None``.
        dicom_seg: the DICOM SEG, or ``None`` (only for DICOM inputs).
    """

    mask: Path
    probabilities: Path | None = None
    dicom_seg: Path | None = None

    def all(self) -> list[Path]:
        return [p for p in (self.mask, self.probabilities, self.dicom_seg) if p is not None]


def _stem(path: Path) -> str:
    name = path.name
    for ending in (".nii.gz", ".nii"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return name


def plan_outputs(
    out: str | Path,
    scan: Scan | None = None,
    probabilities: bool = False,
    dicom_seg: str | Path | None = None,
    force: bool = False,
    input_is_dicom: bool | None = None,
) -> OutputPaths:
    """Decide and check the output paths before any work is done.

    ``out`` must end in ``.nii`` or ``.nii.gz``. Probabilities go to
    ``<stem>_probabilities.nii.gz`` beside it; for a DICOM input the SEG goes to
    ``dicom_seg`` or ``<stem>.seg.dcm`` beside it.

    Raises:
        ConfigError: a bad ending, a missing parent folder, an existing output without
            ``force``, ``dicom_seg`` for a NIfTI input, or an output that is one of the
            scan's input files (refused even with ``force``).
    """
    out = Path(out)
    if not is_nifti_path(out):
        raise ConfigError(f"--out {out}: the mask is written as NIfTI; end it in .nii.gz or .nii")
    is_dicom = scan.is_dicom if scan is not None else bool(input_is_dicom)
    if dicom_seg is not None and not is_dicom:
        raise ConfigError("--dicom-seg is only for DICOM inputs (a SEG references source images)")
    stem = _stem(out)
    paths = OutputPaths(
        mask=out,
        probabilities=out.with_name(f"{stem}_probabilities.nii.gz") if probabilities else None,
        dicom_seg=(Path(dicom_seg) if dicom_seg else out.with_name(f"{stem}.seg.dcm"))
        if is_dicom
        else None,
    )
    resolved = [p.resolve() for p in paths.all()]
    if len(set(resolved)) != len(resolved):
        raise ConfigError(
            f"outputs {', '.join(map(str, paths.all()))} must be different files; "
            "choose another --out or --dicom-seg"
        )
    if scan is not None:
        named = [("--out", paths.mask), ("--dicom-seg", paths.dicom_seg)]
        if paths.probabilities is not None:
            named.append(("--probabilities", paths.probabilities))
        check_not_an_input([(o, p) for o, p in named if p is not None], scan.inputs)
    if paths.dicom_seg is not None and scan is not None:
        from medseg.runtime.io.dicom_seg import check_seg_source

        check_seg_source(scan.dicom)  # before any work: the SEG needs these attributes
    for path in paths.all():
        check_parent_exists(path)
        if path.exists() and not force:
            raise ConfigError(f"output {path} exists; pass --force to replace it")
        if path.is_dir():
            raise ConfigError(f"output {path} is a folder; expected a file path")
    return paths


def write_outputs(
    paths: OutputPaths,
    scan: Scan,
    labels: np.ndarray,
    classes: Mapping[str, int],
    probabilities: np.ndarray | None = None,
    algorithm_version: str = "",
) -> list[Path]:
    """Write the mask (uint8, the input's affine and header), probabilities and DICOM SEG.

    When writing the DICOM SEG fails, the files written before it are removed again, so a
    run leaves all its outputs or none.

    Args:
        labels: ``(X, Y, Z)`` class indices on the scan's grid.
        probabilities: ``(K, X, Y, Z)`` float32, required when ``paths.probabilities`` is set.
    """
    if labels.shape != scan.image.shape[1:]:
        raise ConfigError(f"labels {labels.shape} do not match the scan {scan.image.shape[1:]}")
    seg_writer = None
    if paths.dicom_seg is not None:
        from medseg.runtime.io.dicom_seg import write_dicom_seg

        seg_writer = write_dicom_seg
    written = [save_nifti(paths.mask, labels, scan.affine, header=scan.header, dtype=np.uint8)]
    if paths.probabilities is not None:
        if probabilities is None:
            raise ConfigError("probabilities were requested but not computed")
        written.append(
            save_nifti(
                paths.probabilities,
                np.moveaxis(probabilities, 0, -1),
                scan.affine,
                header=scan.header,
                dtype=np.float32,
            )
        )
    if seg_writer is not None and paths.dicom_seg is not None:
        try:
            written.append(
                seg_writer(
                    paths.dicom_seg,
                    labels,
                    scan.dicom,
                    classes,
                    algorithm_version=algorithm_version or "0",
                )
            )
        except BaseException:
            for path in written:  # nothing partial: the SEG failed, remove what was written
                path.unlink(missing_ok=True)
            raise
    return written
