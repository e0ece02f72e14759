"""Writing a volume as a DICOM series: one single-frame MR or CT Image Storage file per slice.

For tests and demos (the MNI152 template as a "scanner" series); the geometry conventions
are those of :mod:`medseg.runtime.io.dicom`, whose reader round-trips what this writes.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from medseg.atomic import atomic_dir
from medseg.deps import require
from medseg.errors import ConfigError
from medseg.runtime.io.dicom import LPS_FROM_RAS
from medseg.runtime.io.dicom_file import SOP_CLASS, fail

__all__ = ["write_dicom_series"]


def _ds(value: float) -> str:
    """A number as a DICOM DS string (at most 16 characters)."""
    from pydicom.valuerep import format_number_as_ds

    return str(format_number_as_ds(float(value)))


def _encode(data: np.ndarray, folder: Path) -> tuple[np.ndarray, float, float, bool]:
    """Stored pixel values and the rescale that recovers ``data``.

    Returns:
        ``(stored, slope, intercept, signed)``: ``stored`` ``(X, Y, Z)`` uint16 or int16 with
        ``data ~= stored * slope + intercept`` within ``slope / 2``.
    """
    if not np.all(np.isfinite(data)):
        raise fail(folder, "data contains NaN or infinite values", "pass finite values")
    lo = float(data.min()) if data.size else 0.0
    hi = float(data.max()) if data.size else 0.0
    integral = data.dtype.kind in "biu" or bool(np.all(data == np.round(data)))
    if integral and lo >= 0 and hi <= 65535:
        return data.astype(np.uint16), 1.0, 0.0, False
    if integral and lo >= -32768 and hi <= 32767:
        return data.astype(np.int16), 1.0, 0.0, True
    intercept = float(_ds(lo))
    slope = float(_ds((hi - lo) / 65535.0)) if hi > lo else 1.0
    if slope <= 0:  # a range below DS precision
        slope = 1.0
    stored = np.rint((data.astype(np.float64) - intercept) / slope)
    return np.clip(stored, 0, 65535).astype(np.uint16), slope, intercept, False


def _check_geometry(data: np.ndarray, affine: np.ndarray, folder: Path) -> np.ndarray:
    if data.ndim != 3 or min(data.shape) < 1:
        raise fail(
            folder, f"data of shape {data.shape}", "write_dicom_series needs a 3D (X, Y, Z) array"
        )
    if data.dtype.kind not in "biuf":
        raise fail(folder, f"data of dtype {data.dtype}", "pass an integer or float array")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise fail(folder, f"affine of shape {affine.shape}", "pass a finite (4, 4) affine")
    cols = affine[:3, :3]
    if abs(float(np.linalg.det(cols))) < 1e-12:
        raise fail(
            folder,
            f"singular affine {np.round(cols, 4).tolist()}",
            "the affine's first three columns must be non-zero and independent",
        )
    return np.asarray(LPS_FROM_RAS @ affine, dtype=np.float64)


def write_dicom_series(
    data: np.ndarray,
    affine: np.ndarray,
    folder: str | Path,
    *,
    modality: str = "MR",
    series_description: str = "medseg",
    patient_id: str = "ANON",
    patient_name: str = "Anonymous",
) -> Path:
    """Write a volume as a DICOM series, one single-frame file per slice, atomically.

    Files are named ``0000.dcm``, ``0001.dcm``, ... (MR or CT Image Storage, explicit VR
    little endian). Slice ``z`` holds ``data[:, :, z]`` (columns along ``X``, rows along
    ``Y``) at ImagePositionPatient = LPS affine @ ``(0, 0, z, 1)``. Values are stored as
    uint16 (int16 for small negative integers) with RescaleSlope/RescaleIntercept so that
    :func:`read_dicom_series` returns ``data`` within ``slope / 2`` (exactly for integer
    data that fits 16 bits).

    A right-handed affine (``det > 0``, e.g. the MNI template's or any rotation of it) reads
    back with the same voxel order and affine. A left-handed one (e.g. ``diag(-1, 1, 1)``)
    reads back with ``Z`` reversed and the equivalent affine, as the reader sorts slices along
    the normal row x column cosine.

    Args:
        data: volume ``(X, Y, Z)``, integer or float, finite.
        affine: ``(4, 4)`` voxel-to-world matrix in RAS+ mm (nibabel convention).
        folder: output folder; it must not exist or be empty, and its parent must exist.
        modality: ``"MR"`` or ``"CT"``.
        series_description: SeriesDescription of the series.
        patient_id: PatientID.
        patient_name: PatientName; a name without ``^`` is written as a family name
            (``"Anonymous"`` -> ``"Anonymous^"``), the unambiguous DICOM form.

    Returns:
        ``folder``.

    Raises:
        DatasetError: bad data or affine, or ``folder`` is a file or a non-empty folder.
        ConfigError: an unknown ``modality``.
    """
    require("pydicom", "writing DICOM series")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    if modality not in SOP_CLASS:
        raise ConfigError(
            f"modality {modality!r} is not supported for {folder}; use one of {sorted(SOP_CLASS)}"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        what = "a file" if not folder.is_dir() else "a non-empty folder"
        raise fail(folder, f"exists and is {what}", "write a series into a new or empty folder")
    data = np.asarray(data)
    affine = np.asarray(affine, dtype=np.float64)
    lps = _check_geometry(data, affine, folder)
    stored, slope, intercept, signed = _encode(data, folder)

    dx, dy, dz = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    row_cos, col_cos = lps[:3, 0] / dx, lps[:3, 1] / dy
    normal = np.cross(row_cos, col_cos)
    now = datetime.datetime.now()
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    sop_class = UID(SOP_CLASS[modality])
    n_x, n_y, n_z = (int(n) for n in data.shape)
    # A one-component name is written "Name^" (family name only), as DICOM PN recommends.
    person_name = patient_name if "^" in patient_name or not patient_name else f"{patient_name}^"

    with atomic_dir(folder) as tmp:
        for z in range(n_z):
            ipp = lps @ np.array([0.0, 0.0, float(z), 1.0])
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY"]
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
            ds.AccessionNumber = ""
            ds.Modality = modality
            ds.Manufacturer = "medseg-edge"
            ds.ReferringPhysicianName = ""
            ds.SeriesDescription = series_description
            ds.PatientName = person_name
            ds.PatientID = patient_id
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = 1
            ds.InstanceNumber = z + 1
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.ImagePositionPatient = [_ds(v) for v in ipp[:3]]
            ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
            ds.SliceLocation = _ds(float(np.dot(ipp[:3], normal)))
            ds.SliceThickness = _ds(dz)
            ds.PixelSpacing = [_ds(dy), _ds(dx)]  # [between rows (Y), between columns (X)]
            if modality == "MR":
                ds.ScanningSequence = "RM"
                ds.SequenceVariant = "NONE"
                ds.ScanOptions = ""
                ds.MRAcquisitionType = "3D"
                ds.RepetitionTime = ""
                ds.EchoTime = ""
                ds.EchoTrainLength = ""
            else:
                ds.KVP = ""
                ds.AcquisitionNumber = ""
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = n_y
            ds.Columns = n_x
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1 if signed else 0
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
            if modality == "CT":
                ds.RescaleType = "HU"
            frame = np.ascontiguousarray(stored[:, :, z].T)  # (X, Y) -> (Rows, Columns)
            ds.PixelData = frame.astype(frame.dtype.newbyteorder("<"), copy=False).tobytes()
            ds.save_as(tmp / f"{z:04d}.dcm", enforce_file_format=True)
    return folder
