"""The runtime reorients inputs to the bundle's training orientation: the committed demo
bundle (trained on the RAS MNI152 brain) on an LPS copy of it, as an array and as a standard
axial DICOM series through ``medseg infer``. One brain only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.bundle.manifest import Manifest
from medseg.data.nifti import load_nifti
from medseg.errors import ConfigError
from medseg.runtime import Segmentation, Segmenter
from medseg.transforms.orientation import axis_codes, to_orientation

BUNDLE = Path(__file__).resolve().parents[3] / "models/mni152-tissue/bundle"
Z0, Z1 = 80, 96  # 16 axial slices through the ventricles
#: voxel (i, j, k) -> (X-1-i, Y-1-j, k) for a block of shape (X, Y, Z): RAS -> LPS voxel order
FLIP_XY = np.diag([-1.0, -1.0, 1.0, 1.0])


def _flip_matrix(shape: tuple[int, ...]) -> np.ndarray:
    flip = FLIP_XY.copy()
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    return flip


def _dice(pred: np.ndarray, ref: np.ndarray, cls: int) -> float:
    a, b = pred == cls, ref == cls
    return float(2 * np.sum(a & b) / (np.sum(a) + np.sum(b)))


@pytest.fixture(scope="module")
def ras_block(mni_dataset: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, Y, 16) float32 RAS image block, its affine, and the reference labels."""
    image = load_nifti(mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz")
    labels = load_nifti(mni_dataset / "labelsTr" / "MNI152_001.nii.gz")
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ (0, 0, Z0) + image.affine[:3, 3]
    block = np.ascontiguousarray(image.data[:, :, Z0:Z1], dtype=np.float32)
    return block, affine, np.asarray(labels.data[:, :, Z0:Z1])


@pytest.fixture(scope="module")
def segmenter() -> Any:
    pytest.importorskip("onnxruntime")
    with Segmenter.from_bundle(BUNDLE, backend="onnxruntime", threads=1) as seg:
        yield seg


@pytest.fixture(scope="module")
def ras_result(segmenter: Segmenter, ras_block: tuple[np.ndarray, ...]) -> Segmentation:
    block, affine, _ = ras_block
    return segmenter.segment(block, probabilities=True, affine=affine)


def test_demo_bundle_records_the_mni_orientation(mni_dataset: Path) -> None:
    image = load_nifti(mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz")
    assert axis_codes(image.affine) == "RAS"
    assert Manifest.load(BUNDLE).orientation == "RAS"


def test_ras_input_is_not_reoriented(ras_result: Segmentation) -> None:
    assert ras_result.reoriented_from is None
    assert ras_result.labels.shape == (197, 233, Z1 - Z0)


def test_lps_input_is_reoriented_and_gives_the_ras_labels_flipped(
    segmenter: Segmenter, ras_block: tuple[np.ndarray, ...], ras_result: Segmentation
) -> None:
    block, affine, _ = ras_block
    lps_image = np.ascontiguousarray(block[::-1, ::-1])
    lps_affine = affine @ _flip_matrix(block.shape)
    assert axis_codes(lps_affine) == "LPS"
    # the same world point under both grids
    np.testing.assert_allclose(lps_affine @ (0, 0, 0, 1), affine @ (196, 232, 0, 1))

    result = segmenter.segment(lps_image, probabilities=True, affine=lps_affine)
    assert result.reoriented_from == "LPS"
    assert result.labels.shape == lps_image.shape and result.labels.dtype == np.uint8
    assert result.labels.flags.c_contiguous
    np.testing.assert_array_equal(result.labels, ras_result.labels[::-1, ::-1])
    assert result.probabilities is not None and ras_result.probabilities is not None
    np.testing.assert_array_equal(result.probabilities, ras_result.probabilities[:, ::-1, ::-1])

    # without the affine nothing is reoriented: the network sees rotated slices
    plain = segmenter.segment(lps_image, spacing=(1.0, 1.0, 1.0))
    assert plain.reoriented_from is None
    assert not np.array_equal(plain.labels, result.labels)


def test_bundle_without_orientation_does_not_reorient(
    segmenter: Segmenter, ras_block: tuple[np.ndarray, ...]
) -> None:
    import dataclasses

    block, affine, _ = ras_block
    old = Segmenter(segmenter.backend, dataclasses.replace(segmenter.manifest, orientation=None))
    lps_affine = affine @ _flip_matrix(block.shape)
    assert old.reorientation(lps_affine) is None
    assert segmenter.reorientation(lps_affine) == ("LPS", "RAS")
    assert segmenter.reorientation(affine) is None
    with pytest.raises(ConfigError, match="degenerate affine"):
        segmenter.reorientation(np.diag([1.0, 1.0, 0.0, 1.0]))


def test_standard_axial_dicom_series_is_reoriented_by_infer(
    ras_block: tuple[np.ndarray, ...], ras_result: Segmentation, tmp_path: Path
) -> None:
    pytest.importorskip("highdicom")
    import pydicom

    from medseg.cli.app import app
    from medseg.runtime.io.dicom import read_dicom_series
    from medseg.runtime.io.dicom_write import write_dicom_series

    block, affine, reference = ras_block
    # Written as is, the RAS block becomes a series with ImageOrientationPatient
    # (-1, 0, 0, 0, -1, 0) that reads back in RAS order; a scanner's standard axial series
    # has (1, 0, 0, 0, 1, 0): write the same brain in LPS voxel order.
    as_is = read_dicom_series(write_dicom_series(block, affine, tmp_path / "as-is"))
    assert axis_codes(as_is.affine) == "RAS"
    folder = write_dicom_series(
        np.ascontiguousarray(block[::-1, ::-1]),
        affine @ _flip_matrix(block.shape),
        tmp_path / "dicom",
        modality="MR",
    )
    first = pydicom.dcmread(sorted(p for p in Path(folder).iterdir() if p.is_file())[0])
    np.testing.assert_allclose(
        [float(v) for v in first.ImageOrientationPatient], [1, 0, 0, 0, 1, 0]
    )
    series = read_dicom_series(folder)
    assert axis_codes(series.affine) == "LPS"

    out = tmp_path / "mask.nii.gz"
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    args = ["infer", str(BUNDLE), str(folder), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--backend", "onnxruntime", "--threads", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "reoriented LPS -> RAS for the network" in result.output

    mask = load_nifti(out)
    np.testing.assert_allclose(mask.affine, series.affine, atol=1e-6)
    assert axis_codes(mask.affine) == "LPS"
    in_ras = to_orientation(np.asarray(mask.data), axis_codes(mask.affine), "RAS")
    np.testing.assert_allclose(mask.affine @ _flip_matrix(block.shape), affine, atol=1e-4)
    for name, cls in Manifest.load(BUNDLE).classes.items():
        if cls == 0:
            continue
        nifti_dice = _dice(ras_result.labels, reference, cls)
        dicom_dice = _dice(in_ras, reference, cls)
        assert abs(dicom_dice - nifti_dice) <= 0.005, (name, dicom_dice, nifti_dice)


def test_manifest_without_orientation_still_loads() -> None:
    data = json.loads((BUNDLE / "medseg.json").read_text())
    assert data["orientation"] == "RAS"
    del data["orientation"]
    manifest = Manifest.from_dict(data)
    assert manifest.orientation is None
    assert manifest.to_dict()["orientation"] is None
    again = Manifest.from_dict({**data, "orientation": "LPS"})
    assert again.orientation == "LPS" and Manifest.from_dict(again.to_dict()) == again


@pytest.mark.parametrize("bad", ["RAX", "ras", "RRS", 3, ["R", "A", "S"]])
def test_bad_manifest_orientation_is_a_config_error_naming_the_key(bad: object) -> None:
    data = json.loads((BUNDLE / "medseg.json").read_text())
    with pytest.raises(ConfigError, match="orientation"):
        Manifest.from_dict({**data, "orientation": bad})
