"""Writing a label volume as a DICOM Segmentation (SEG) object with highdicom.

The SEG references the source series read by :func:`medseg.runtime.io.dicom.read_dicom_series`
frame by frame (one frame per source slice and segment, empty frames omitted), so a PACS
viewer overlays it on the series it was computed from.

Segments: every class of the model except background (label 0) becomes one segment,
numbered ``1 .. K-1`` in increasing label order, labelled with the class name, algorithm type
AUTOMATIC with an AlgorithmIdentificationSequence (family DCM 123110 "Artificial
Intelligence"). Segmented property category and type are SNOMED CT codes from pydicom's code
dictionary: the brain-tissue classes of the embedded MNI152 dataset are coded as such
(``CSF`` -> category "Body Substance", type "Cerebrospinal Fluid"; ``GM``/``WM`` ->
category "Tissue", type "Gray Matter"/"White Matter"); any other class name gets the
generic category and type SCT 85756007 "Tissue", its meaning carried by the segment label.

highdicom and pydicom are imported through :func:`medseg.deps.require` at the point of use,
so importing this module costs only numpy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.atomic import atomic_file
from medseg.deps import require
from medseg.runtime.io.dicom_file import fail

if TYPE_CHECKING:
    from medseg.runtime.io.dicom import DicomSeries

__all__ = ["SEG_SOURCE_ATTRIBUTES", "check_seg_source", "write_dicom_seg"]

#: Class names (lower case) with a specific SNOMED CT coding: (category, type) attribute
#: names in ``pydicom.sr.codedict.codes.SCT``. Anything else is coded as generic tissue.
_KNOWN_CLASSES: dict[str, tuple[str, str]] = {
    "csf": ("BodySubstance", "CerebrospinalFluid"),
    "cerebrospinal fluid": ("BodySubstance", "CerebrospinalFluid"),
    "gm": ("Tissue", "GrayMatter"),
    "grey matter": ("Tissue", "GrayMatter"),
    "gray matter": ("Tissue", "GrayMatter"),
    "wm": ("Tissue", "WhiteMatter"),
    "white matter": ("Tissue", "WhiteMatter"),
}

#: Offset added to the source SeriesNumber for the SEG series.
_SERIES_NUMBER_OFFSET = 1000


def _property_codes(name: str) -> tuple[Any, Any]:
    """(segmented property category, segmented property type) for a class name."""
    require("pydicom", "writing DICOM SEG")
    from pydicom.sr.codedict import codes

    category, kind = _KNOWN_CLASSES.get(name.strip().lower(), ("Tissue", "Tissue"))
    return getattr(codes.SCT, category), getattr(codes.SCT, kind)


def _segments(path: Path, classes: Mapping[str, int]) -> list[tuple[int, str]]:
    """Non-background classes as ``(label value, name)``, in increasing label order."""
    values: dict[int, str] = {}
    for name, value in classes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise fail(
                path,
                f"class {name!r} has label {value!r}",
                "class labels must be non-negative integers",
            )
        if name.strip().lower() == "background" and int(value) != 0:
            raise fail(
                path,
                f"class 'background' has label {int(value)}",
                "background must be label 0 (it is not written as a segment)",
            )
        if int(value) in values:
            raise fail(
                path,
                f"classes {values[int(value)]!r} and {name!r} share label {int(value)}",
                "each class needs its own label value",
            )
        values[int(value)] = str(name)
    segments = sorted((v, n) for v, n in values.items() if v != 0)
    if not segments:
        raise fail(
            path,
            f"no class besides background in {dict(classes)}",
            "pass at least one class with a label > 0",
        )
    return segments


def write_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    series: DicomSeries,
    classes: Mapping[str, int],
    *,
    algorithm_name: str = "medseg-edge",
    algorithm_version: str = "0.1.0",
    series_description: str = "medseg segmentation",
) -> Path:
    """Write a label volume as a BINARY DICOM SEG that references ``series``, atomically.

    Args:
        path: the ``.dcm`` file to write; its parent folder must exist.
        labels: class indices ``(X, Y, Z)`` (integer, or float with integral values),
            aligned voxel for voxel with ``series.data``.
        series: the source series, as returned by
            :func:`~medseg.runtime.io.dicom.read_dicom_series`.
        classes: class name -> label value, e.g. ``{"background": 0, "CSF": 1, ...}``. Label
            0 is background and is not a segment; every other class is one segment, numbered
            ``1 .. K-1`` in increasing label order, even when it has no voxel.
        algorithm_name: AlgorithmName of every segment and ManufacturerModelName of the SEG.
        algorithm_version: AlgorithmVersion and SoftwareVersions.
        series_description: SeriesDescription of the SEG series.

    Returns:
        ``path``.

    Raises:
        DatasetError: ``labels`` of another shape than ``series.data``, values that are not
            a label of ``classes``, or inconsistent ``classes``.
    """
    hd = require("highdicom", "writing DICOM SEG")
    require("pydicom", "writing DICOM SEG")
    from pydicom.sr.codedict import codes

    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != series.data.shape:
        raise fail(
            path,
            f"labels of shape {labels.shape} for a series of shape {series.data.shape}",
            "labels must be (X, Y, Z) and aligned voxel for voxel with the series data",
        )
    if labels.dtype.kind == "f":
        if not bool(np.all(np.isfinite(labels))) or not bool(np.all(labels == np.round(labels))):
            raise fail(
                path,
                "labels hold non-integer values",
                "pass integer class indices (e.g. the argmax of the logits)",
            )
    elif labels.dtype.kind not in "biu":
        raise fail(path, f"labels of dtype {labels.dtype}", "pass an integer label array")
    segments = _segments(path, classes)
    present = np.unique(labels).astype(np.int64)
    allowed = {0} | {value for value, _ in segments}
    unknown = [int(v) for v in present if int(v) not in allowed]
    if unknown:
        raise fail(
            path,
            f"labels hold values {unknown[:10]} that are not classes",
            f"values must be labels of the classes {dict(classes)}",
        )

    # Label value -> segment number 1..K-1 (0 stays 0), as a lookup table.
    lut = np.zeros(int(max(allowed)) + 1, dtype=np.uint8 if len(segments) < 256 else np.uint16)
    for number, (value, _) in enumerate(segments, start=1):
        lut[value] = number
    # (X, Y, Z) -> (frames = Z in series.datasets order, Rows = Y, Columns = X)
    pixel_array = np.ascontiguousarray(lut[labels.astype(np.int64)].transpose(2, 1, 0))

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm_version,
    )
    descriptions = []
    for number, (_, name) in enumerate(segments, start=1):
        category, kind = _property_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    try:
        source_number = int(series.datasets[0].get("SeriesNumber", 0) or 0)
    except (TypeError, ValueError):
        source_number = 0
    check_seg_source(series)
    try:
        with _family_name_as_written(series.datasets) as name:
            seg = _segmentation(
                hd,
                series,
                pixel_array,
                descriptions,
                source_number,
                algorithm_name,
                algorithm_version,
                series_description,
            )
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise fail(
            series.folder,
            f"highdicom cannot build a SEG from this series ({type(exc).__name__}: {exc})",
            "source images with complete patient, study and frame-of-reference attributes",
        ) from exc
    if name is not None:
        seg.PatientName = name  # the source's value, exactly as the scanner wrote it
    with atomic_file(path) as tmp:
        seg.save_as(tmp)
    return path


#: Attributes every source image needs for a DICOM SEG that references it (highdicom copies
#: the patient and study, and the frame of reference, from the source images).
SEG_SOURCE_ATTRIBUTES = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "FrameOfReferenceUID",
    "PatientID",
    "StudyDate",
)


def check_seg_source(series: DicomSeries) -> None:
    """Raise a one-line DatasetError naming the attribute a SEG needs and the series lacks."""
    for ds in series.datasets:
        missing = [k for k in SEG_SOURCE_ATTRIBUTES if not str(ds.get(k, "") or "").strip()]
        if missing:
            raise fail(
                series.folder,
                f"cannot write a DICOM SEG: the images lack {', '.join(missing)}",
                "a series whose images carry them (or write the NIfTI mask only, from a NIfTI)",
            )


def _segmentation(
    hd: Any,
    series: DicomSeries,
    pixel_array: np.ndarray,
    descriptions: list[Any],
    source_number: int,
    algorithm_name: str,
    algorithm_version: str,
    series_description: str,
) -> Any:
    from pydicom.uid import generate_uid

    return hd.seg.Segmentation(
        source_images=list(series.datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=source_number + _SERIES_NUMBER_OFFSET,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="medseg-edge",
        manufacturer_model_name=algorithm_name,
        software_versions=algorithm_version,
        device_serial_number="0",
        series_description=series_description,
    )


@contextmanager
def _family_name_as_written(datasets: Sequence[Any]) -> Iterator[Any]:
    """While highdicom copies the patient module, give a one-component ``PatientName``
    (``"ANONYMOUS"``, as many scanners and anonymisers write it) its trailing caret.

    Both spell the same name (PS3.5 6.2.1: trailing ``^`` may be omitted), but highdicom warns
    about every single-component name (a ``UserWarning`` on each run). Yields the original
    value (``None`` when nothing was changed); the datasets are restored on exit.
    """
    names = [ds.get("PatientName") for ds in datasets]
    single = [n is not None and str(n) and "^" not in str(n) for n in names]
    try:
        for ds, name, change in zip(datasets, names, single, strict=True):
            if change:
                ds.PatientName = f"{name}^"
        yield names[0] if single[0] else None
    finally:
        for ds, name, change in zip(datasets, names, single, strict=True):
            if change:
                ds.PatientName = name
