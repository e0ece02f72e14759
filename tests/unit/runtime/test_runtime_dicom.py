"""DICOM series in and DICOM SEG out for the scanner-side runtime, on real files only.

Real inputs: CT_small.dcm and MR_small.dcm shipped inside pydicom, and the embedded MNI152
T1 template written as a DICOM series.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError, DatasetError

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from medseg.runtime.io.dicom import DicomSeries, read_dicom_series  # noqa: E402
from medseg.runtime.io.dicom_seg import write_dicom_seg  # noqa: E402
from medseg.runtime.io.dicom_write import write_dicom_series  # noqa: E402

SHAPE = (20, 24, 6)
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def affine_of(diagonal: tuple[float, float, float], origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.diag([*diagonal, 1.0])
    affine[:3, 3] = origin
    return affine


def oblique_affine() -> np.ndarray:
    """A rotation about all three axes times anisotropic voxels (right-handed)."""
    a, b, c = np.deg2rad([10.0, 20.0, 30.0])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag([0.7, 0.8, 3.0])
    affine[:3, 3] = (1.5, -2.0, 3.25)
    return affine


def volume() -> np.ndarray:
    return (np.random.default_rng(0).normal(size=SHAPE) * 100.0 + 40.0).astype(np.float32)


def slope_of(folder: Path) -> float:
    return float(pydicom.dcmread(folder / "0000.dcm").RescaleSlope)


def ct_small() -> Path:
    return Path(get_testdata_file("CT_small.dcm"))


def mr_small() -> Path:
    return Path(get_testdata_file("MR_small.dcm"))


@pytest.fixture
def series_dir(tmp_path: Path) -> Path:
    """A written 6-slice synthetic MR series."""
    return write_dicom_series(volume(), affine_of((1.0, 1.0, 2.0)), tmp_path / "series")


# -- reading the real CT_small -------------------------------------------------------------


@pytest.mark.parametrize("as_folder", [False, True])
def test_ct_small_single_file_and_folder(tmp_path: Path, as_folder: bool) -> None:
    path = ct_small()
    if as_folder:
        (tmp_path / "ct").mkdir()
        path = Path(shutil.copy(path, tmp_path / "ct" / "IM0001"))
        path = path.parent
    series = read_dicom_series(path)
    ds = pydicom.dcmread(ct_small())
    assert isinstance(series, DicomSeries)
    assert series.data.shape == (128, 128, 1) == series.shape
    assert series.data.dtype == np.float32
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    assert float(ds.RescaleIntercept) == -1024.0
    np.testing.assert_allclose(series.data[:, :, 0], expected.T)
    # affine from IOP [1,0,0,0,1,0], IPP and PixelSpacing, in RAS: first two rows negated
    ipp = np.array([float(v) for v in ds.ImagePositionPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = [dc, 0, 0]
    lps[:3, 1] = [0, dr, 0]
    lps[:3, 2] = [0, 0, float(ds.SliceThickness)]
    lps[:3, 3] = ipp
    np.testing.assert_allclose(series.affine, LPS_FROM_RAS @ lps, atol=1e-9)
    assert series.affine.dtype == np.float64
    assert series.spacing == pytest.approx((dc, dr, 5.0))
    assert series.modality == "CT"
    assert series.series_uid == ds.SeriesInstanceUID
    assert series.folder == path
    assert len(series.datasets) == 1
    assert series.datasets[0].SOPInstanceUID == ds.SOPInstanceUID
    assert "PixelData" not in series.datasets[0]  # metadata only; pixels are in data


def test_mr_small_has_no_rescale(tmp_path: Path) -> None:
    series = read_dicom_series(mr_small())
    ds = pydicom.dcmread(mr_small())
    assert "RescaleSlope" not in ds
    np.testing.assert_array_equal(series.data[:, :, 0], ds.pixel_array.T.astype(np.float32))
    assert series.modality == "MR"


# -- write -> read round trips ---------------------------------------------------------------


@pytest.mark.parametrize(
    "affine",
    [
        affine_of((1.0, 1.0, 2.0)),
        affine_of((-0.8, -0.9, 2.5)),  # negative x and y spacing (right-handed)
        affine_of((1.0, -1.0, -1.5)),  # negative y and z spacing (right-handed)
        oblique_affine(),
    ],
    ids=["positive", "negative-xy", "negative-yz", "oblique"],
)
def test_round_trip_values_order_affine(tmp_path: Path, affine: np.ndarray) -> None:
    data = volume()
    folder = write_dicom_series(data, affine, tmp_path / "s")
    assert sorted(p.name for p in folder.iterdir()) == [f"{z:04d}.dcm" for z in range(6)]
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left
    series = read_dicom_series(folder)
    slope = slope_of(folder)
    assert slope == pytest.approx((data.max() - data.min()) / 65535, rel=1e-6)
    assert series.data.shape == SHAPE
    assert np.abs(series.data - data).max() <= slope / 2 + 1e-3
    np.testing.assert_allclose(series.affine, affine, atol=1e-4)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    assert series.spacing == pytest.approx(tuple(zooms), abs=1e-4)


def test_left_handed_affine_reads_back_with_z_reversed(tmp_path: Path) -> None:
    """diag(-1, 1, 1): slices are sorted along row x column cosine, i.e. against Z."""
    data = volume()
    affine = affine_of((-1.0, 1.0, 1.0))
    folder = write_dicom_series(data, affine, tmp_path / "s")
    series = read_dicom_series(folder)
    assert np.abs(series.data[:, :, ::-1] - data).max() <= slope_of(folder) / 2 + 1e-3
    flipped = affine.copy()
    flipped[:3, 2] = -affine[:3, 2]
    flipped[:3, 3] = affine[:3, :3] @ [0, 0, SHAPE[2] - 1] + affine[:3, 3]
    np.testing.assert_allclose(series.affine, flipped, atol=1e-4)
    # same voxel, same world position
    world = affine @ [3, 4, 1, 1]
    np.testing.assert_allclose(series.affine @ [3, 4, SHAPE[2] - 2, 1], world, atol=1e-4)


def test_integer_data_is_exact_and_file_is_valid(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-1024, 3000, SHAPE).astype(np.int16)
    folder = write_dicom_series(
        data, affine_of((0.5, 0.5, 1.0)), tmp_path / "ct", modality="CT", patient_id="P1"
    )
    series = read_dicom_series(folder)
    np.testing.assert_array_equal(series.data, data.astype(np.float32))
    ds = pydicom.dcmread(folder / "0002.dcm")
    assert ds.preamble is not None and len(ds.preamble) == 128
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == pydicom.uid.CTImageStorage
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.Modality, ds.PatientID, ds.PixelRepresentation, ds.InstanceNumber) == (
        "CT",
        "P1",
        1,
        3,
    )
    assert (ds.Rows, ds.Columns) == (SHAPE[1], SHAPE[0])
    assert float(ds.RescaleSlope) == 1.0
    np.testing.assert_array_equal(ds.pixel_array, data[:, :, 2].T)
    assert series.modality == "CT"
    assert series.series_uid == ds.SeriesInstanceUID
    mr = pydicom.dcmread(write_dicom_series(data, np.eye(4), tmp_path / "mr") / "0000.dcm")
    assert mr.SOPClassUID == pydicom.uid.MRImageStorage
    assert str(mr.PatientName) == "Anonymous^"


def test_shuffled_files_and_reversed_instance_numbers_sort_by_position(
    tmp_path: Path, series_dir: Path
) -> None:
    reference = read_dicom_series(series_dir)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = [f"IM{n:03d}" for n in range(6)]
    random.Random(3).shuffle(names)
    for z, name in enumerate(names):
        ds = pydicom.dcmread(series_dir / f"{z:04d}.dcm")
        ds.InstanceNumber = 6 - z
        ds.save_as(shuffled / name)
    (shuffled / ".DS_Store").write_bytes(b"junk")  # hidden files are skipped
    (shuffled / "DICOMDIR").write_bytes(b"junk")  # so is DICOMDIR
    (shuffled / "sub").mkdir()  # and subfolders
    series = read_dicom_series(shuffled)
    np.testing.assert_array_equal(series.data, reference.data)
    np.testing.assert_allclose(series.affine, reference.affine)
    assert [ds.SOPInstanceUID for ds in series.datasets] == [
        ds.SOPInstanceUID for ds in reference.datasets
    ]


def test_mni152_template_round_trip(tmp_path: Path, mni_dataset: Path) -> None:
    """The real T1 template (uint8, 197 x 233 x 189, 1 mm) survives exactly."""
    from medseg.data.nifti import load_nifti

    t1 = load_nifti(mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz")
    folder = write_dicom_series(t1.data, t1.affine, tmp_path / "mni", series_description="T1")
    series = read_dicom_series(folder)
    assert series.data.shape == t1.data.shape == (197, 233, 189)
    np.testing.assert_array_equal(series.data, t1.data.astype(np.float32))
    np.testing.assert_allclose(series.affine, t1.affine, atol=1e-4)
    assert series.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert series.modality == "MR"


# -- DICOM SEG -------------------------------------------------------------------------------


def read_seg_labels(
    path: Path, series: DicomSeries, values: list[int]
) -> tuple[object, np.ndarray]:
    """Read a SEG back as a label volume ``(X, Y, Z)`` in the original label values."""
    seg = hd.seg.segread(path)
    uids = [ds.SOPInstanceUID for ds in series.datasets]
    numbers = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, assert_missing_frames_are_empty=True
    )  # (frames, rows, columns) of segment numbers
    lut = np.array([0, *values])
    return seg, lut[numbers.transpose(2, 1, 0)]


def test_seg_on_written_series_three_classes(tmp_path: Path, series_dir: Path) -> None:
    series = read_dicom_series(series_dir)
    labels = np.zeros(SHAPE, dtype=np.int64)
    labels[2:8, 3:10, 1:4] = 1
    labels[10:15, 5:20, 2:5] = 2
    labels[16:19, 1:4, 4] = 5  # non-consecutive label value
    classes = {"background": 0, "liver": 1, "GM": 2, "tumour": 5}
    out = tmp_path / "out"
    out.mkdir()
    path = write_dicom_seg(out / "seg.dcm", labels, series, classes, algorithm_version="9.9")
    assert [p.name for p in out.iterdir()] == ["seg.dcm"]  # no temporary left
    seg, back = read_seg_labels(path, series, [1, 2, 5])
    assert seg.number_of_segments == 3
    assert seg.segment_numbers == [1, 2, 3]
    described = [seg.get_segment_description(n) for n in (1, 2, 3)]
    assert [d.segment_label for d in described] == ["liver", "GM", "tumour"]
    assert [d.algorithm_type.value for d in described] == ["AUTOMATIC"] * 3
    assert described[0].algorithm_identification[0].AlgorithmName == "medseg-edge"
    assert described[0].algorithm_identification[0].AlgorithmVersion == "9.9"
    assert described[0].segmented_property_type.value == "85756007"  # generic "Tissue"
    assert described[1].segmented_property_type.meaning == "Gray Matter"
    assert seg.SegmentationType == "BINARY"
    assert seg.SeriesDescription == "medseg segmentation"
    assert seg.FrameOfReferenceUID == series.datasets[0].FrameOfReferenceUID
    np.testing.assert_array_equal(back, labels)


def test_seg_on_ct_small(tmp_path: Path) -> None:
    series = read_dicom_series(ct_small())
    labels = (series.data > 100).astype(np.uint8) + (series.data > 1000).astype(np.uint8)
    assert set(np.unique(labels)) == {0, 1, 2}
    path = write_dicom_seg(tmp_path / "ct_seg.dcm", labels, series, {"soft": 1, "bone": 2})
    seg, back = read_seg_labels(path, series, [1, 2])
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == ["soft", "bone"]
    np.testing.assert_array_equal(back, labels)
    assert seg.StudyInstanceUID == series.datasets[0].StudyInstanceUID


def test_seg_on_mni152_labels(tmp_path: Path, mni_dataset: Path) -> None:
    """Real tissue labels (CSF/GM/WM) on a 20-slice crop of the template."""
    from medseg.data.mni152 import MNI152_LABELS
    from medseg.data.nifti import load_nifti

    t1 = load_nifti(mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz")
    label = load_nifti(mni_dataset / "labelsTr" / "MNI152_001.nii.gz").data
    crop = np.s_[:, :, 80:100]
    affine = t1.affine.copy()
    affine[:3, 3] = (t1.affine @ [0, 0, 80, 1])[:3]
    series = read_dicom_series(write_dicom_series(t1.data[crop], affine, tmp_path / "mni"))
    path = write_dicom_seg(tmp_path / "mni_seg.dcm", label[crop], series, MNI152_LABELS)
    seg, back = read_seg_labels(path, series, [1, 2, 3])
    assert [seg.get_segment_description(n).segment_label for n in (1, 2, 3)] == [
        "CSF",
        "GM",
        "WM",
    ]
    assert seg.get_segment_description(1).segmented_property_type.meaning == ("Cerebrospinal Fluid")
    np.testing.assert_array_equal(back, label[crop])


def test_seg_refuses_bad_labels_and_leaves_nothing(tmp_path: Path, series_dir: Path) -> None:
    series = read_dicom_series(series_dir)
    target = tmp_path / "seg.dcm"
    classes = {"background": 0, "liver": 1}
    with pytest.raises(DatasetError, match="shape") as info:
        write_dicom_seg(target, np.zeros((20, 24, 5), dtype=np.uint8), series, classes)
    assert str(target) in str(info.value)
    assert "\n" not in str(info.value)
    bad = np.zeros(SHAPE, dtype=np.uint8)
    bad[0, 0, 0] = 7
    with pytest.raises(DatasetError, match=r"values \[7\]") as info:
        write_dicom_seg(target, bad, series, classes)
    assert str(target) in str(info.value)
    with pytest.raises(DatasetError, match="share label"):
        write_dicom_seg(target, bad * 0, series, {"a": 1, "b": 1})
    with pytest.raises(DatasetError, match="non-integer"):
        write_dicom_seg(target, np.full(SHAPE, 0.5), series, classes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["series"]


# -- bad input ---------------------------------------------------------------------------------


def copy_slices(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as info:
        read_dicom_series(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no DICOM files") as info:
        read_dicom_series(empty)
    message = str(info.value)
    assert message.startswith(f"{empty}: ") and "\n" not in message and "; " in message
    (empty / "study1").mkdir()
    with pytest.raises(DatasetError, match="subfolders"):
        read_dicom_series(empty)


def test_non_dicom_file_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(ct_small(), folder / "IM1")
    (folder / "notes.txt").write_text("not an image\n")
    with pytest.raises(DatasetError, match="not a DICOM file") as info:
        read_dicom_series(folder)
    assert str(folder / "notes.txt") in str(info.value)


def test_file_without_pixel_data_is_named(tmp_path: Path, series_dir: Path) -> None:
    folder = copy_slices(series_dir, tmp_path / "c")
    ds = pydicom.dcmread(folder / "0003.dcm")
    del ds.PixelData
    ds.save_as(folder / "0003.dcm")
    with pytest.raises(DatasetError, match="no pixel data") as info:
        read_dicom_series(folder)
    assert str(folder / "0003.dcm") in str(info.value)


def test_two_series_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(ct_small(), folder / "a.dcm")
    shutil.copy(mr_small(), folder / "b.dcm")
    with pytest.raises(DatasetError, match="2 series") as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert message.startswith(str(folder))
    for path in (ct_small(), mr_small()):
        assert f"{pydicom.dcmread(path).SeriesInstanceUID}: 1 file" in message


def test_duplicate_slice_position(tmp_path: Path, series_dir: Path) -> None:
    folder = copy_slices(series_dir, tmp_path / "dup")
    ds = pydicom.dcmread(folder / "0002.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "0002_copy.dcm")
    with pytest.raises(DatasetError, match="same position") as info:
        read_dicom_series(folder)
    message = str(info.value)
    assert str(folder) in message and "0002.dcm" in message and "0002_copy.dcm" in message


def test_non_uniform_gaps(tmp_path: Path, series_dir: Path) -> None:
    folder = copy_slices(series_dir, tmp_path / "gap")
    (folder / "0003.dcm").unlink()
    with pytest.raises(DatasetError, match="not uniform") as info:
        read_dicom_series(folder)
    assert str(folder) in str(info.value)
    assert "min 2 mm" in str(info.value) and "max 4 mm" in str(info.value)


def test_multiframe_missing_geometry_and_mixed_sizes(tmp_path: Path, series_dir: Path) -> None:
    folder = copy_slices(series_dir, tmp_path / "mf")
    ds = pydicom.dcmread(folder / "0001.dcm")
    ds.NumberOfFrames = 3
    ds.save_as(folder / "0001.dcm")
    with pytest.raises(DatasetError, match="multi-frame DICOM is not supported") as info:
        read_dicom_series(folder)
    assert str(folder / "0001.dcm") in str(info.value)
    assert "single-frame" in str(info.value)

    folder = copy_slices(series_dir, tmp_path / "geo")
    ds = pydicom.dcmread(folder / "0004.dcm")
    del ds.ImagePositionPatient
    ds.save_as(folder / "0004.dcm")
    with pytest.raises(DatasetError, match="no ImagePositionPatient") as info:
        read_dicom_series(folder)
    assert str(folder / "0004.dcm") in str(info.value)

    folder = copy_slices(series_dir, tmp_path / "size")
    other = write_dicom_series(np.zeros((8, 8, 1)), np.eye(4), tmp_path / "small")
    ds = pydicom.dcmread(other / "0000.dcm")
    ds.SeriesInstanceUID = pydicom.dcmread(folder / "0000.dcm").SeriesInstanceUID
    ds.save_as(folder / "small.dcm")
    with pytest.raises(DatasetError, match="mixed image sizes") as info:
        read_dicom_series(folder)
    assert str(folder) in str(info.value)


def test_mixed_orientation(tmp_path: Path, series_dir: Path) -> None:
    folder = copy_slices(series_dir, tmp_path / "iop")
    ds = pydicom.dcmread(folder / "0005.dcm")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.995, 0.0998749]
    ds.save_as(folder / "0005.dcm")
    with pytest.raises(DatasetError, match="mixed ImageOrientationPatient") as info:
        read_dicom_series(folder)
    assert str(folder) in str(info.value) and "0005.dcm" in str(info.value)


def test_write_refuses_non_empty_folder_and_bad_input(tmp_path: Path, series_dir: Path) -> None:
    before = sorted(p.name for p in series_dir.iterdir())
    with pytest.raises(DatasetError, match="non-empty folder") as info:
        write_dicom_series(volume(), np.eye(4), series_dir)
    assert str(series_dir) in str(info.value)
    assert sorted(p.name for p in series_dir.iterdir()) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_dicom_series(np.ones((4, 5, 2)), np.eye(4), empty) == empty
    assert len(list(empty.iterdir())) == 2
    nan = volume()
    nan[0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="NaN") as info:
        write_dicom_series(nan, np.eye(4), tmp_path / "nan")
    assert str(tmp_path / "nan") in str(info.value)
    with pytest.raises(DatasetError, match="3D"):
        write_dicom_series(np.zeros((4, 4)), np.eye(4), tmp_path / "flat")
    with pytest.raises(DatasetError, match="singular"):
        write_dicom_series(volume(), np.diag([1.0, 0.0, 1.0, 1.0]), tmp_path / "sing")
    with pytest.raises(ConfigError, match="modality"):
        write_dicom_series(volume(), np.eye(4), tmp_path / "us", modality="US")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "series"]


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import medseg.runtime.io.dicom, medseg.runtime.io.dicom_seg; "
        "print(sorted(m for m in ('pydicom', 'highdicom') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
