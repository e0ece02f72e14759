"""The embedded MNI152 dataset: real template files, labels per DESIGN.md, nnU-Net layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data.check import check_dataset
from medseg.data.mni152 import MNI152_CASE_ID, mni152_source_dir, write_mni152
from medseg.data.nifti import load_nifti
from medseg.errors import ConfigError


def test_written_dataset_passes_the_check_with_four_labels_at_1mm(mni_dataset: Path) -> None:
    report = check_dataset(mni_dataset).to_dict()
    assert report["num_train_cases"] == 1
    assert list(report["labels"]) == ["background", "CSF", "GM", "WM"]
    assert all(count > 0 for count in report["labels"].values())
    spec = json.loads((mni_dataset / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "T1"}
    label = load_nifti(mni_dataset / "labelsTr" / f"{MNI152_CASE_ID}.nii.gz")
    assert label.data.shape == (197, 233, 189)
    assert label.spacing == pytest.approx((1.0, 1.0, 1.0))


def test_labels_follow_the_design_recipe(mni_dataset: Path) -> None:
    src = mni152_source_dir()
    t1 = load_nifti(src / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz").data
    gm = load_nifti(src / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").data / 255.0
    wm = load_nifti(src / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").data / 255.0
    label = load_nifti(mni_dataset / "labelsTr" / f"{MNI152_CASE_ID}.nii.gz").data
    image = load_nifti(mni_dataset / "imagesTr" / f"{MNI152_CASE_ID}_0000.nii.gz").data
    np.testing.assert_array_equal(image, t1)
    brain = t1 > 0
    assert (label[~brain] == 0).all() and (label[brain] > 0).all()
    # where WM is clearly dominant the label is WM, where GM is, GM, and where both are ~0, CSF
    assert (label[brain & (wm > 0.8)] == 3).all()
    assert (label[brain & (gm > 0.8)] == 2).all()
    assert (label[brain & (gm + wm < 0.2)] == 1).all()
    # anatomically sensible proportions for an adult brain: WM and GM dominate, CSF smaller
    fractions = np.bincount(label[brain].ravel(), minlength=4)[1:] / brain.sum()
    assert 0.05 < fractions[0] < 0.35 and fractions[1] > 0.3 and fractions[2] > 0.25
    # and the hemispheres mirror each other (symmetric template)
    assert (label == label[::-1]).mean() > 0.97


def test_refuses_non_empty_folder_without_force(tmp_path: Path) -> None:
    out = tmp_path / "mni"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(ConfigError, match="--force"):
        write_mni152(out)
    assert (out / "keep.txt").read_text() == "user data"


def test_missing_parent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parent folder"):
        write_mni152(tmp_path / "no" / "such" / "mni")
    assert not (tmp_path / "no").exists()
