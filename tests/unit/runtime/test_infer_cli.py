"""``medseg infer`` end to end on real files: the committed demo bundle on the MNI152 brain
(NIfTI and DICOM inputs), the toy bundle for the bad-input cases."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.cli.app import app
from medseg.data.nifti import load_nifti, save_nifti

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _infer(*args: str | Path) -> tuple[int, str]:
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    result = runner.invoke(app, ["infer", *map(str, args)], env=env)
    return result.exit_code, result.output


def _val_dice(labels: np.ndarray, ref: np.ndarray, slice_ids: list[str], cls: int) -> float:
    z = [int(s.split("=")[1]) for s in slice_ids]
    pred, truth = labels[..., z] == cls, ref[..., z] == cls
    return float(2 * np.sum(pred & truth) / (np.sum(pred) + np.sum(truth)))


def test_mask_keeps_the_affine_and_reproduces_the_recorded_dice(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    image = mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz"
    reference = mni_dataset / "labelsTr" / "MNI152_001.nii.gz"
    out = tmp_path / "mask.nii.gz"
    code, output = _infer(
        demo_bundle,
        image,
        "--out",
        out,
        "--backend",
        "onnxruntime",
        "--threads",
        "2",
        "--reference",
        reference,
        "--no-postprocess",  # the recorded Dice is the raw network's (post-processing off)
    )
    assert code == 0, output
    assert "CSF" in output and "volume ml" in output and "slices in" in output
    mask, source = load_nifti(out), load_nifti(image)
    np.testing.assert_array_equal(mask.affine, source.affine)
    assert mask.shape == source.shape and mask.data.dtype == np.uint8
    manifest = json.loads((demo_bundle / "medseg.json").read_text())
    recorded = manifest["precisions"]["fp32"]["accuracy"]["dice_per_class"]
    slice_ids = manifest["source"]["validation"]["slice_ids"]
    ref = load_nifti(reference).data
    for name, value in manifest["classes"].items():
        if value:
            measured = _val_dice(np.asarray(mask.data), ref, slice_ids, value)
            assert measured == pytest.approx(recorded[name], abs=1e-4), name


def test_dicom_series_in_gives_nifti_and_dicom_seg_out(
    demo_bundle: Path, mni_dataset: Path, tmp_path: Path
) -> None:
    """The same brain (a 24-slice block) as a DICOM series and as NIfTI: same mask."""
    pytest.importorskip("highdicom")
    from medseg.runtime.io.dicom_write import write_dicom_series

    source = load_nifti(mni_dataset / "imagesTr" / "MNI152_001_0000.nii.gz")
    block = np.asarray(source.data)[..., 80:104].astype(np.float32)
    affine = source.affine.copy()
    affine[:3, 3] = (source.affine @ np.array([0, 0, 80, 1]))[:3]
    series = write_dicom_series(block, affine, tmp_path / "dicom", modality="MR")
    # the NIfTI twin holds exactly what the DICOM files hold (after their int16 rescale)
    from medseg.runtime.io.dicom import read_dicom_series

    twin = save_nifti(tmp_path / "twin.nii.gz", read_dicom_series(series).data, affine)

    code, output = _infer(
        demo_bundle, series, "--out", tmp_path / "d.nii.gz", "--backend", "onnxruntime"
    )
    assert code == 0, output
    code, output = _infer(
        demo_bundle, twin, "--out", tmp_path / "n.nii.gz", "--backend", "onnxruntime"
    )
    assert code == 0, output
    from_dicom, from_nifti = load_nifti(tmp_path / "d.nii.gz"), load_nifti(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(from_dicom.data, from_nifti.data)
    np.testing.assert_allclose(from_dicom.affine, affine, atol=1e-4)
    seg_path = tmp_path / "d.seg.dcm"
    assert seg_path.is_file()
    import highdicom as hd

    seg = hd.seg.segread(seg_path)
    labels = [seg.get_segment_description(n).segment_label for n in seg.segment_numbers]
    assert labels == ["CSF", "GM", "WM"]


# -- bad input: one line, exit 2, nothing written ---------------------------------------------


def _toy_image(toy_data: Path) -> Path:
    return toy_data / "imagesTr" / "toy_000_0000.nii.gz"


def _assert_refused(code: int, output: str, *needles: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, (needle, output)


def test_tampered_onnx_is_refused(tiny_bundle: Path, toy_data: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    # ONNX Runtime's INT8 runs the CPU file (model.int8.cpu.onnx) the bundle carries
    with (bundle / "model.int8.cpu.onnx").open("r+b") as f:
        f.truncate(1000)
    out = tmp_path / "m.nii.gz"
    code, output = _infer(
        bundle,
        _toy_image(toy_data),
        "--out",
        out,
        "--backend",
        "onnxruntime",
        "--precision",
        "int8",
    )
    _assert_refused(code, output, "model.int8.cpu.onnx", "sha256")
    assert not out.exists()


def test_nan_voxels_wrong_channels_and_2d_images(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    data = np.asarray(load_nifti(_toy_image(toy_data)).data, dtype=np.float32)
    nan = data.copy()
    nan[3, 4, 5] = np.nan
    nan_path = save_nifti(tmp_path / "nan.nii.gz", nan, np.eye(4))
    out = tmp_path / "m.nii.gz"
    code, output = _infer(tiny_bundle, nan_path, "--out", out, "--backend", "onnxruntime")
    _assert_refused(code, output, "nan.nii.gz", "NaN")

    image = _toy_image(toy_data)
    code, output = _infer(tiny_bundle, image, image, "--out", out, "--backend", "onnxruntime")
    _assert_refused(code, output, "2 channel", "takes 1")

    flat = tmp_path / "flat.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(data[..., 0], np.eye(4)), str(flat))
    code, output = _infer(tiny_bundle, flat, "--out", out, "--backend", "onnxruntime")
    _assert_refused(code, output, "flat.nii.gz", "3D")
    assert not out.exists()


def test_slice_size_outside_the_profile(tiny_bundle: Path, tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((80, 48, 4)).astype(np.float32)  # not constant
    big = save_nifti(tmp_path / "big.nii.gz", data, np.eye(4))
    out = tmp_path / "m.nii.gz"
    code, output = _infer(tiny_bundle, big, "--out", out, "--backend", "onnxruntime")
    _assert_refused(code, output, "big.nii.gz", "80x48", "height 32")
    assert not out.exists()


def test_existing_output_needs_force(tiny_bundle: Path, toy_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.nii.gz"
    save_nifti(out, np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4))  # an earlier mask
    kept = out.read_bytes()
    code, output = _infer(
        tiny_bundle, _toy_image(toy_data), "--out", out, "--backend", "onnxruntime"
    )
    _assert_refused(code, output, "exists", "--force")
    assert out.read_bytes() == kept
    code, output = _infer(
        tiny_bundle,
        _toy_image(toy_data),
        "--out",
        out,
        "--backend",
        "onnxruntime",
        "--force",
        "--probabilities",
    )
    assert code == 0, output
    assert load_nifti(out).shape == (32, 48, 12)
    import nibabel as nib  # load_nifti reads 3D volumes; the probabilities are 4D

    assert nib.load(str(tmp_path / "m_probabilities.nii.gz")).shape == (32, 48, 12, 3)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--backend", "gpu"], ["unknown backend 'gpu'", "onnxruntime"]),
        (["--precision", "int4"], ["no int4 model", "fp32"]),
        (["--batch-size", "64"], ["batch size 64", "1:4:8"]),
        (["--providers", "rocm"], ["unknown ONNX Runtime provider 'rocm'"]),
    ],
)
def test_bad_options(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    out = tmp_path / "m.nii.gz"
    code, output = _infer(tiny_bundle, _toy_image(toy_data), "--out", out, *args)
    _assert_refused(code, output, *needles)
    assert not out.exists()


def test_bad_output_paths(tiny_bundle: Path, toy_data: Path, tmp_path: Path) -> None:
    image = _toy_image(toy_data)
    code, output = _infer(tiny_bundle, image, "--out", tmp_path / "m.png")
    _assert_refused(code, output, "m.png", ".nii.gz")
    code, output = _infer(tiny_bundle, image, "--out", tmp_path / "no" / "m.nii.gz")
    _assert_refused(code, output, "does not exist")
    code, output = _infer(
        tiny_bundle, image, "--out", tmp_path / "m.nii.gz", "--dicom-seg", tmp_path / "s.dcm"
    )
    _assert_refused(code, output, "--dicom-seg", "DICOM inputs")
    assert not list(tmp_path.iterdir()) or all(p.is_dir() for p in tmp_path.iterdir())


def test_missing_input_and_not_a_bundle(toy_data: Path, tmp_path: Path) -> None:
    not_a_bundle = tmp_path / "folder"
    not_a_bundle.mkdir()
    code, output = _infer(not_a_bundle, _toy_image(toy_data), "--out", tmp_path / "m.nii.gz")
    _assert_refused(code, output, "not a bundle", "medseg.json")
    code, output = _infer(not_a_bundle, tmp_path / "nope.nii.gz", "--out", tmp_path / "m.nii.gz")
    _assert_refused(code, output, "nope.nii.gz", "does not exist")


def test_dicom_output_collisions_and_seg_attributes_are_checked_before_running(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    pydicom = pytest.importorskip("pydicom")
    from medseg.runtime.io.dicom_write import write_dicom_series

    image = np.asarray(load_nifti(_toy_image(toy_data)).data, dtype=np.float32)
    series = write_dicom_series(image, np.eye(4), tmp_path / "series", modality="MR")
    out = tmp_path / "m.nii.gz"
    code, output = _infer(
        tiny_bundle, series, "--out", out, "--dicom-seg", out, "--backend", "onnxruntime"
    )
    _assert_refused(code, output, "do not overlap")
    for path in sorted(series.iterdir()):
        ds = pydicom.dcmread(path)
        del ds.StudyDate
        ds.save_as(path)
    code, output = _infer(tiny_bundle, series, "--out", out, "--backend", "onnxruntime")
    _assert_refused(code, output, "cannot write a DICOM SEG", "StudyDate")
    assert not out.exists() and not (tmp_path / "m.seg.dcm").exists()


def test_options_of_the_other_backend_are_refused(
    tiny_bundle: Path, toy_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "m.nii.gz"
    code, output = _infer(
        tiny_bundle, _toy_image(toy_data), "--out", out, "--backend", "onnxruntime", "--cuda-graph"
    )
    _assert_refused(code, output, "--cuda-graph is a TensorRT option")
    assert not out.exists()


def test_a_dicom_seg_is_not_taken_for_a_scan(tmp_path: Path) -> None:
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from medseg.errors import DatasetError
    from medseg.runtime.io.dicom import read_dicom_series

    with pytest.raises(DatasetError, match="is a SEG object"):
        read_dicom_series(get_testdata_file("liver_1frame.dcm"))
