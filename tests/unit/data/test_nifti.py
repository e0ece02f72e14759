"""Reading and writing single NIfTI files: round trips and one-line errors for bad files."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.data.nifti import NiftiImage, load_nifti, save_nifti
from medseg.errors import ConfigError, DatasetError

nib = pytest.importorskip("nibabel")

SHAPE = (16, 20, 12)
SPACING = (1.0, 1.0, 2.5)
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = (-8.0, -10.0, -15.0)


def write_nifti(path: Path, array: np.ndarray) -> Path:
    """Write with nibabel directly, independently of medseg's writer."""
    nib.save(nib.Nifti1Image(array, AFFINE, dtype=array.dtype), str(path))
    return path


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_round_trip_keeps_data_affine_spacing(tmp_path: Path, ending: str) -> None:
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    path = save_nifti(tmp_path / f"a{ending}", data, AFFINE)
    img = load_nifti(path)
    assert isinstance(img, NiftiImage)
    assert img.data.dtype == np.float32
    np.testing.assert_array_equal(img.data, data)
    np.testing.assert_allclose(img.affine, AFFINE)
    assert img.affine.dtype == np.float64
    assert img.spacing == SPACING
    assert img.shape == SHAPE
    assert [p.name for p in tmp_path.iterdir()] == [f"a{ending}"]  # no temporary left


def test_label_dtype_choice(tmp_path: Path) -> None:
    label = np.random.default_rng(0).integers(0, 3, SHAPE)  # int64
    assert load_nifti(save_nifti(tmp_path / "l.nii.gz", label, AFFINE)).data.dtype == np.int32
    stored = load_nifti(save_nifti(tmp_path / "u.nii.gz", label, AFFINE, dtype=np.uint8))
    assert stored.data.dtype == np.uint8
    np.testing.assert_array_equal(stored.data, label)
    mask = load_nifti(save_nifti(tmp_path / "b.nii.gz", label > 0, AFFINE)).data
    assert mask.dtype == np.uint8
    huge = np.full(SHAPE, 2**40, dtype=np.int64)
    with pytest.raises(DatasetError, match="without loss"):
        save_nifti(tmp_path / "h.nii.gz", huge, AFFINE)


def test_header_is_reused_without_rescaling(tmp_path: Path) -> None:
    image = load_nifti(write_nifti(tmp_path / "img.nii.gz", np.ones(SHAPE, np.float32) * 3.5))
    label = np.full(SHAPE, 2, dtype=np.uint8)
    out = load_nifti(save_nifti(tmp_path / "seg.nii.gz", label, image.affine, image.header))
    assert out.data.dtype == np.uint8
    np.testing.assert_array_equal(out.data, label)
    assert out.spacing == SPACING


def test_scaled_file_reads_as_float(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.ones(SHAPE, np.int16), AFFINE, dtype=np.int16)
    img.header.set_slope_inter(0.5, 10.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    data = load_nifti(tmp_path / "s.nii.gz").data
    assert data.dtype.kind == "f"
    np.testing.assert_allclose(data, 10.5)


def test_singleton_4d_is_squeezed(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "a.nii.gz", np.zeros((*SHAPE, 1), np.float32))
    assert load_nifti(path).shape == SHAPE


def test_other_4d_and_2d_are_rejected(tmp_path: Path, dataset_error) -> None:
    four = write_nifti(tmp_path / "four.nii.gz", np.zeros((*SHAPE, 2), np.float32))
    dataset_error(lambda: load_nifti(four), str(four), "(16, 20, 12, 2)", "expected a 3D volume")
    two = write_nifti(tmp_path / "two.nii.gz", np.zeros(SHAPE[:2], np.float32))
    dataset_error(lambda: load_nifti(two), str(two), "2 dimensions", "(16, 20)")


def test_missing_file_and_folder(tmp_path: Path, dataset_error) -> None:
    missing = tmp_path / "nope.nii.gz"
    dataset_error(lambda: load_nifti(missing), f"{missing}: file does not exist")
    dataset_error(lambda: load_nifti(tmp_path), str(tmp_path), "is a folder")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_random_bytes_are_not_nifti(tmp_path: Path, ending: str, dataset_error) -> None:
    path = tmp_path / f"junk{ending}"
    path.write_bytes(np.random.default_rng(1).bytes(2000))
    message = dataset_error(lambda: load_nifti(path), str(path))
    assert "corrupt" in message or "not a NIfTI" in message


def test_empty_file(tmp_path: Path, dataset_error) -> None:
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    dataset_error(lambda: load_nifti(path), str(path), "empty file")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_file(tmp_path: Path, ending: str, dataset_error) -> None:
    data = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    path = write_nifti(tmp_path / f"t{ending}", data)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    dataset_error(lambda: load_nifti(path), str(path), "truncated")


def _with_pixdim(tmp_path: Path, value: float, gz: bool) -> Path:
    """A file whose raw pixdim[1] is ``value`` (nibabel would fix it on save, so patch bytes)."""
    plain = write_nifti(tmp_path / "src.nii", np.zeros(SHAPE, np.float32))
    raw = bytearray(plain.read_bytes())
    raw[80:84] = struct.pack("<f", value)  # pixdim[1] at byte 80 of the NIfTI-1 header
    path = tmp_path / ("bad.nii.gz" if gz else "bad.nii")
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


@pytest.mark.parametrize(("value", "gz"), [(0.0, False), (-1.0, True)])
def test_non_positive_spacing(tmp_path: Path, value: float, gz: bool, dataset_error) -> None:
    path = _with_pixdim(tmp_path, value, gz)
    dataset_error(lambda: load_nifti(path), str(path), "spacing", "not positive")


def test_other_formats_are_not_nifti(tmp_path: Path, dataset_error) -> None:
    path = tmp_path / "a.mgz"
    nib.save(nib.MGHImage(np.zeros(SHAPE, np.float32), AFFINE), str(path))
    dataset_error(lambda: load_nifti(path), str(path), "MGHImage", "not NIfTI")


def test_save_errors(tmp_path: Path, dataset_error) -> None:
    data = np.zeros(SHAPE, np.float32)
    dataset_error(lambda: save_nifti(tmp_path / "a.nrrd", data, AFFINE), ".nii or .nii.gz")
    dataset_error(lambda: save_nifti(tmp_path / "a.nii", data[0], AFFINE), "(20, 12)")
    dataset_error(lambda: save_nifti(tmp_path / "a.nii", data, np.eye(3)), "affine")
    with pytest.raises(ConfigError, match="does not exist"):
        save_nifti(tmp_path / "no" / "a.nii.gz", data, AFFINE)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = save_nifti(tmp_path / "a.nii.gz", np.ones(SHAPE, np.float32), AFFINE)

    def broken_save(img: object, filename: str) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(DatasetError, match="disk full"):
        save_nifti(path, np.zeros(SHAPE, np.float32), AFFINE)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_nifti(path).data, 1.0)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]


def test_import_costs_only_numpy() -> None:
    code = (
        "import sys, medseg.data.nifti, medseg.data.nnunet, medseg.data.check\n"
        "heavy = [m for m in ('nibabel', 'scipy', 'rich', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "src")}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 0, result.stderr
