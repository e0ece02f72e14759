"""Issue 22, items 10-12: corrupt or impossible files are refused by the one reading layer.

``medseg.data.nifti.load_nifti`` (every NIfTI any command reads), ``medseg.runtime.io``
(``infer``'s scans, DICOM included) and the dataset reader each give one line naming the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.data.nifti import load_nifti, save_nifti
from medseg.errors import DatasetError
from medseg.runtime.io import load_scan


@pytest.fixture
def image(tmp_path: Path) -> Path:
    data = np.random.default_rng(0).random((24, 20, 8)).astype(np.float32) * 100
    return save_nifti(tmp_path / "scan.nii.gz", data, np.eye(4))


def _one_line(exc: pytest.ExceptionInfo[DatasetError], path: Path, *words: str) -> None:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for word in words:
        assert word in message, message


def test_a_gzip_crc_error_is_refused_not_read_as_data(image: Path, tmp_path: Path) -> None:
    raw = bytearray(image.read_bytes())
    raw[-6] ^= 0xFF  # the CRC32 of the stream's trailer
    bad = tmp_path / "crc.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DatasetError) as exc:
        load_nifti(bad)
    _one_line(exc, bad, "CRC")


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_header_claiming_more_voxels_than_the_file_holds_is_refused_before_allocating(
    tmp_path: Path, name: str
) -> None:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    cases = [((30000, 30000, 30000), "2.7e+13 voxels"), ((1000, 1000, 1000), "4000000000 bytes")]
    for shape, words in cases:
        header.set_data_shape(shape)
        blob = header.binaryblock + b"\0" * 700
        path = tmp_path / name
        path.write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
        with pytest.raises(DatasetError) as exc:
            load_nifti(path)
        _one_line(exc, path, words)


def test_an_empty_dimension_is_named_with_the_shape(tmp_path: Path) -> None:
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((120, 42, 0), np.float32), np.eye(4)), path)
    with pytest.raises(DatasetError) as exc:
        load_nifti(path)
    _one_line(exc, path, "120x42x0")


@pytest.mark.parametrize("value", [0.0, 7.0])
def test_a_blank_or_constant_scan_is_refused(tmp_path: Path, value: float) -> None:
    path = save_nifti(tmp_path / "blank.nii.gz", np.full((8, 8, 4), value, np.float32), np.eye(4))
    load_nifti(path)  # a constant label map is legitimate; a scan to segment is not
    with pytest.raises(DatasetError) as exc:
        load_scan([path])
    _one_line(exc, path, "same value", f"{value:g}")


def test_a_spacing_above_50_mm_is_refused_naming_the_file(image: Path, tmp_path: Path) -> None:
    data = load_nifti(image).data
    path = save_nifti(tmp_path / "cm.nii.gz", data, np.diag([1.0, 1.0, 100.0, 1.0]))
    with pytest.raises(DatasetError) as exc:
        load_scan([path])
    _one_line(exc, path, "100", "50 mm")


def _dicom_series(tmp_path: Path, **changes: object) -> Path:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    for key, value in changes.items():
        setattr(ds, key, value)
    folder = tmp_path / "series"
    folder.mkdir()
    ds.save_as(folder / "slice.dcm")
    return folder


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"RescaleSlope": 0}, ("RescaleSlope 0",)),
        ({"RescaleSlope": "nan"}, ("RescaleSlope",)),
        ({"PixelSpacing": [0, 0]}, ("PixelSpacing [0.0, 0.0]", "not positive")),
    ],
)
def test_dicom_rescale_slope_0_and_pixel_spacing_0_are_named(
    tmp_path: Path, changes: dict[str, object], words: tuple[str, ...]
) -> None:
    folder = _dicom_series(tmp_path, **changes)
    with pytest.raises(DatasetError) as exc:
        load_scan([folder])
    message = str(exc.value)
    assert "\n" not in message and "slice.dcm" in message
    for word in words:
        assert word in message, message


def test_a_200_byte_dicom_is_called_truncated(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    folder = tmp_path / "cut"
    folder.mkdir()
    (folder / "a.dcm").write_bytes(Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()[:200])
    with pytest.raises(DatasetError, match=r"a\.dcm: truncated: only 200 bytes"):
        load_scan([folder])
