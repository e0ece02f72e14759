"""nnU-Net preprocessing in numpy/scipy against nnunetv2's own functions on cohort cases.

The reference is nnU-Net v2 itself: its readers (SimpleITKIO, NibabelIO,
NibabelIOWithReorient), ``crop_to_nonzero``, ``resample_data_or_seg_to_shape`` (skimage),
``DefaultPreprocessor.run_case_npy`` and
``convert_predicted_logits_to_segmentation_with_correct_shape``, driven by a ``plans.json``
in nnU-Net's format (``PlansManager``). Tolerances are stated at each assert.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.data.nifti import load_nifti
from medseg.transforms.nnunet_preprocess import (
    crop_to_nonzero,
    logits_to_segmentation,
    nnunet_array,
    preprocess,
    to_file_order,
)
from medseg.transforms.nnunet_recipe import NnunetRecipe
from medseg.transforms.nnunet_resample import resample_to_shape

torch = pytest.importorskip("torch")
nn_resampling = pytest.importorskip("nnunetv2.preprocessing.resampling.default_resampling")
nn_cropping = pytest.importorskip("nnunetv2.preprocessing.cropping.cropping")
nn_pre = pytest.importorskip("nnunetv2.preprocessing.preprocessors.default_preprocessor")
nn_export = pytest.importorskip("nnunetv2.inference.export_prediction")
nn_plans = pytest.importorskip("nnunetv2.utilities.plans_handling.plans_handler")
nn_sitk = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer")
nn_nib = pytest.importorskip("nnunetv2.imageio.nibabel_reader_writer")

LABELS = {"background": 0, "a": 1, "b": 2}
DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": LABELS, "file_ending": ".nii.gz"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_pre") / "cohort"
    write_mni152_cohort(out, cases=4, seed=3)
    return out


def _case(cohort: Path, i: int) -> Path:
    return sorted((cohort / "imagesTr").glob("*_0000.nii.gz"))[i]


def _plans(config: str, spacing: list[float], patch: list[int], scheme: str, mask: bool) -> dict:
    kw = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    conf = {
        "data_identifier": f"nnUNetPlans_{config}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "spacing": spacing,
        "normalization_schemes": [scheme],
        "use_mask_for_norm": [mask],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": kw,
        "resampling_fn_seg_kwargs": {**kw, "is_seg": True, "order": 1},
        "resampling_fn_probabilities_kwargs": {**kw, "order": 1},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {},
            "_kw_requires_import": [],
        },
    }
    return {
        "dataset_name": "Dataset001_Cohort",
        "plans_name": "nnUNetPlans",
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [2, 0, 1],
        "transpose_backward": [1, 2, 0],
        "configurations": {config: conf},
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 900.0, "std": 350.0, "percentile_00_5": 40.0, "percentile_99_5": 2500.0}
        },
    }


@pytest.mark.parametrize("reader", ["SimpleITKIO", "NibabelIO", "NibabelIOWithReorient"])
def test_nnunet_array_is_nnunets_reader(cohort: Path, reader: str) -> None:
    rw = {
        "SimpleITKIO": nn_sitk.SimpleITKIO,
        "NibabelIO": nn_nib.NibabelIO,
        "NibabelIOWithReorient": nn_nib.NibabelIOWithReorient,
    }[reader]()
    for i in (0, 1):
        path = _case(cohort, i)
        ref, props = rw.read_images([str(path)])
        image = load_nifti(path)
        ours, spacing = nnunet_array([image], reader)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_array_equal(ours, ref)  # exact
        np.testing.assert_allclose(spacing, props["spacing"], rtol=1e-6)
        labels = (ours[0] > np.median(ours[0])).astype(np.uint8)
        back = to_file_order(labels, image, reader)
        out = path.parent / f"seg_{reader}_{i}.nii.gz"
        rw.write_seg(labels, str(out), props)  # nnU-Net's writer, for the file order
        np.testing.assert_array_equal(back, np.asarray(load_nifti(out).data))


def test_crop_is_nnunets_crop_to_nonzero() -> None:
    rng = np.random.default_rng(0)
    data = np.zeros((2, 30, 40, 20), dtype=np.float32)
    data[0, 5:20, 8:33, 3:17] = rng.normal(size=(15, 25, 14))
    data[0, 10:12, 15:20, 8:10] = 0  # a hole, filled
    data[1, 22:25, 2:4, 1:2] = 1.0
    ref, seg, bbox = nn_cropping.crop_to_nonzero(data.copy())
    ours, mask, box = crop_to_nonzero(data)
    np.testing.assert_array_equal(ours, ref)
    assert [list(b) for b in box] == [list(b) for b in bbox]
    np.testing.assert_array_equal(mask, seg[0] >= 0)


@pytest.mark.parametrize(
    ("shape", "new_shape", "spacing", "new_spacing", "order"),
    [
        ((18, 27, 31), (25, 20, 44), (1.3, 1.0, 0.8), (0.9, 1.4, 0.56), 3),  # isotropic-ish
        ((9, 40, 33), (20, 30, 50), (4.0, 0.9, 1.0), (1.8, 1.2, 0.66), 3),  # separate z, axis 0
        ((30, 7, 28), (24, 16, 21), (1.0, 5.0, 1.2), (1.25, 2.2, 1.6), 1),  # separate, axis 1
    ],
)
def test_resampling_is_nnunets_skimage_resampling(
    shape: tuple[int, ...],
    new_shape: tuple[int, ...],
    spacing: tuple[float, ...],
    new_spacing: tuple[float, ...],
    order: int,
) -> None:
    rng = np.random.default_rng(1)
    data = ndimage.gaussian_filter(rng.normal(size=(2, *shape)), 1.5).astype(np.float32)
    ref = nn_resampling.resample_data_or_seg_to_shape(
        data.copy(), new_shape, spacing, new_spacing, False, order, 0, None
    )
    ours = resample_to_shape(data, new_shape, spacing, new_spacing, order, 0, None)
    assert ours.dtype == ref.dtype == np.float32 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)  # measured: 0 (same arithmetic)


CASES: list[tuple[str, list[float], list[int], str, bool]] = [
    ("3d_fullres", [2.1, 1.7, 1.9], [32, 32, 32], "ZScoreNormalization", False),
    ("3d_fullres", [1.6, 4.5, 1.4], [32, 16, 32], "CTNormalization", False),
    ("3d_lowres", [3.0, 3.0, 3.0], [16, 16, 16], "ZScoreNormalization", True),
    ("2d", [1.5, 1.2], [64, 64], "ZScoreNormalization", True),
]


def _nnunet_managers(plans: dict, config: str) -> tuple[Any, Any]:
    pm = nn_plans.PlansManager(copy.deepcopy(plans))
    return pm, pm.get_configuration(config)


@pytest.mark.parametrize(("config", "spacing", "patch", "scheme", "mask"), CASES)
def test_preprocess_and_export_match_nnunet(
    cohort: Path, config: str, spacing: list[float], patch: list[int], scheme: str, mask: bool
) -> None:
    plans = _plans(config, spacing, patch, scheme, mask)
    recipe = NnunetRecipe.from_plans(plans, DATASET_JSON, config, mirror_axes=(0, 1))
    pm, cm = _nnunet_managers(plans, config)
    rw = nn_sitk.SimpleITKIO()
    for i in (0, 3):
        path = _case(cohort, i)
        array, props = rw.read_images([str(path)])
        ref_data, _, ref_props = nn_pre.DefaultPreprocessor(verbose=False).run_case_npy(
            array.copy(), None, copy.deepcopy(props), pm, cm, DATASET_JSON
        )
        ours_array, ours_spacing = nnunet_array([load_nifti(path)], "SimpleITKIO")
        data, case = preprocess(ours_array, ours_spacing, recipe)
        assert data.shape == ref_data.shape and data.dtype == np.float32
        assert case.bbox == tuple(tuple(b) for b in ref_props["bbox_used_for_cropping"])
        assert case.shape_before_cropping == tuple(ref_props["shape_before_cropping"])
        # the same float32/float64 operations in the same order: measured max |diff| 0 (exact)
        np.testing.assert_allclose(data, ref_data, rtol=0, atol=1e-6)

        rng = np.random.default_rng(i)
        logits = ndimage.gaussian_filter(rng.normal(size=(3, *data.shape[1:])), 2.0) * 30
        logits = logits.astype(np.float32)
        ref_seg, ref_prob = nn_export.convert_predicted_logits_to_segmentation_with_correct_shape(
            torch.from_numpy(logits.copy()),
            pm,
            cm,
            pm.get_label_manager(DATASET_JSON),
            ref_props,
            return_probabilities=True,
        )
        labels, prob = logits_to_segmentation(logits, case, recipe)
        assert labels.shape == ref_seg.shape == array.shape[1:]
        assert prob.shape == ref_prob.shape and prob.dtype == np.float32
        np.testing.assert_allclose(prob, ref_prob, rtol=0, atol=1e-5)  # measured 1.2e-7
        assert (labels == ref_seg).mean() >= 0.9999  # measured: 100 %
