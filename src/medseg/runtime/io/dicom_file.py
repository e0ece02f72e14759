"""One file of a DICOM series: read completely, checked to be an image medseg can use.

:func:`read_file` reads a Part-10 file with one-line errors, :func:`check_image` refuses
what the runtime cannot segment (no pixels, multi-frame, colour, compressed without a
decoder, ...), :func:`pixels` returns the modality-rescaled voxels and :func:`floats` a
numeric attribute. :mod:`medseg.runtime.io.dicom` assembles the files into a series. Every
failure is a :class:`~medseg.errors.DatasetError` ``"<path>: <problem>; <what would be
accepted>"``; pydicom is imported at the point of use.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

from medseg.deps import require
from medseg.errors import DatasetError

__all__ = [
    "ACCEPTED",
    "SOP_CLASS",
    "check_image",
    "fail",
    "floats",
    "pixels",
    "read_file",
    "rescale",
    "short",
]

#: SOP classes written by :func:`~medseg.runtime.io.dicom_write.write_dicom_series`, by modality.
SOP_CLASS = {
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
}

ACCEPTED = "a folder holding the single-frame DICOM files of one series, or one DICOM file"


def fail(path: Path, problem: str, accepted: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}; {accepted}")


def short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_file(path: Path) -> Any:
    """Read one DICOM Part-10 file completely, with one-line errors."""
    pydicom = require("pydicom", "reading DICOM series")
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise fail(
            path,
            "not a DICOM file (no 'DICM' marker after the 128-byte preamble)",
            f"pass {ACCEPTED}; remove other files from the series folder",
        ) from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, struct.error) as exc:
        raise fail(
            path,
            f"unreadable DICOM file ({type(exc).__name__}: {short(str(exc))})",
            f"pass {ACCEPTED}; the file may be truncated or corrupt",
        ) from None


def check_image(ds: Any, path: Path) -> None:
    """Refuse a file that is not a single-frame grayscale image (header only)."""
    modality = str(ds.get("Modality", "") or "")
    if modality in ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO", "REG"):
        raise fail(
            path,
            f"is a {modality} object, not an image of the scan",
            f"pass {ACCEPTED}; keep segmentations and reports out of the series folder",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise fail(
            path,
            f"a multi-frame file ({frames} frames): enhanced multi-frame DICOM is not supported",
            "export the series as single-frame files (one file per slice)",
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        size = path.stat().st_size
        if len(ds) == 0 or ("Rows" not in ds and "SOPClassUID" not in ds and size < 2048):
            raise fail(
                path,
                f"truncated: only {size} bytes, ending inside the header (no image attributes "
                "after the file meta information)",
                "copy the series again from the scanner or PACS",
            )
        if "Rows" in ds and "Columns" in ds and _ends_early(ds, path):
            raise fail(
                path,
                f"truncated: it has the header of a {ds.Rows}x{ds.Columns} image but the file "
                f"ends ({path.stat().st_size} bytes) before its pixel data",
                "copy the series again from the scanner or PACS",
            )
        raise fail(
            path,
            "has no pixel data (e.g. a structured report, presentation state or DICOMDIR)",
            f"pass {ACCEPTED}; remove non-image files from the series folder",
        )
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise fail(
            path,
            f"a colour image ({samples} samples per pixel)",
            "pass a grayscale series (SamplesPerPixel 1)",
        )


def _ends_early(ds: Any, path: Path) -> bool:
    """True when the file is longer than what pydicom parsed from it: it was cut inside an
    element (pydicom stops silently at the end of a truncated file)."""
    import io

    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except Exception:  # pydicom raises many types for datasets it cannot re-encode
        return False
    return len(buffer.getvalue()) < path.stat().st_size


def _pixel_data_cut(ds: Any, syntax: Any) -> tuple[int, int] | None:
    """``(bytes present, bytes needed)`` when uncompressed pixel data is shorter than its image.

    ``None`` for compressed transfer syntaxes (their length says nothing) or complete data.
    """
    if syntax is None or getattr(syntax, "is_compressed", True) or "PixelData" not in ds:
        return None
    try:
        needed = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
        needed = needed * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated) // 8
        present = len(ds.PixelData)
    except (AttributeError, TypeError, ValueError):
        return None
    return (present, needed) if present < needed else None


def pixels(ds: Any, path: Path) -> np.ndarray:
    """Rescaled pixels of a single-frame grayscale dataset, ``(X, Y)`` float32."""
    try:
        pixels = np.asarray(ds.pixel_array)
    except (RuntimeError, NotImplementedError, ValueError, TypeError, AttributeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", syntax)
        cut = _pixel_data_cut(ds, syntax)
        if cut is not None:
            raise fail(
                path,
                f"truncated inside its pixel data: {cut[0]} of the {cut[1]} bytes a "
                f"{ds.Rows}x{ds.Columns} {ds.BitsAllocated}-bit image needs",
                "copy the series again from the scanner or PACS",
            ) from None
        raise fail(
            path,
            f"cannot decode its pixel data (transfer syntax {name}; "
            f"{type(exc).__name__}: {short(str(exc), 80)})",
            "export the series uncompressed or install the pydicom decoder plugin it needs",
        ) from None
    if pixels.ndim != 2:
        raise fail(
            path,
            f"pixel data of shape {pixels.shape}, not one (Rows, Columns) frame",
            "pass single-frame grayscale files",
        )
    slope, intercept = rescale(ds, path)
    values = pixels.astype(np.float32)
    if slope != 1.0 or intercept != 0.0:
        values = (pixels.astype(np.float64) * slope + intercept).astype(np.float32)
    return np.ascontiguousarray(values.T)  # (Rows, Columns) -> (X = column, Y = row)


def rescale(ds: Any, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (1 and 0 when absent).

    A slope of 0 maps every pixel to the intercept (a blank image); it and non-numbers are
    refused rather than replaced.
    """
    values = []
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        raw = ds.get(keyword)
        if raw is None or raw == "":
            values.append(default)
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            raise fail(
                path,
                f"{keyword} {short(str(raw), 40)!r} is not a finite number",
                f"{keyword} must be a finite number",
            )
        if keyword == "RescaleSlope" and value == 0.0:
            raise fail(
                path,
                "RescaleSlope 0 maps every pixel to one value (a blank image)",
                "RescaleSlope must be non-zero (1 when the pixels are stored unscaled)",
            )
        values.append(value)
    return values[0], values[1]


def floats(ds: Any, keyword: str, count: int, path: Path) -> np.ndarray | None:
    """Numeric multi-value attribute as float64, ``None`` when absent or empty."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (count,) or not np.all(np.isfinite(out)):
        raise fail(
            path,
            f"invalid {keyword} {short(str(value), 80)!s}",
            f"{keyword} must hold {count} finite numbers",
        )
    if keyword == "PixelSpacing" and not np.all(out > 0):
        raise fail(
            path,
            f"PixelSpacing {out.tolist()} mm is not positive",
            "PixelSpacing must hold two positive sizes in mm (row, column spacing)",
        )
    return out
