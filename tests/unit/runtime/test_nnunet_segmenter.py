"""An nnU-Net fold-ensemble bundle through the runtime, against ``nnUNetPredictor`` itself.

The bundle holds two folds of a small 2D or 3D network as ONNX files (ONNX Runtime CPU); the
oracle is nnU-Net v2's ``nnUNetPredictor.predict_single_npy_array`` with the same weights in
torch, the same plans (nnU-Net's ``PlansManager``), both folds and mirroring, on cohort cases.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from nnunet_bundle import (
    CONFIGS,
    DATASET_JSON,
    fold_weights,
    nnunet_plans,
    plans_recipe,
    torch_fold,
    write_nnunet_bundle,
)

from medseg.bundle import Manifest, bundle_onnx_paths
from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.errors import ConfigError
from medseg.runtime import Segmenter, load_scan
from medseg.runtime.pipelines import NnunetPipeline, NnunetTiming
from medseg.runtime.pipelines.nnunet import fold_backends
from medseg.transforms.nnunet_recipe import NnunetRecipe

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
nn_pred = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")
nn_plans = pytest.importorskip("nnunetv2.utilities.plans_handling.plans_handler")
nn_sitk = pytest.importorskip("nnunetv2.imageio.simpleitk_reader_writer")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_seg") / "cohort"
    write_mni152_cohort(out, cases=2, seed=5)
    return out


def _recipe(config: str) -> NnunetRecipe:
    return plans_recipe(config)


def _oracle(config: str, recipe: NnunetRecipe, path: Path) -> tuple[np.ndarray, np.ndarray]:
    pm = nn_plans.PlansManager(nnunet_plans(config))
    nets = [torch_fold(recipe, fold_weights(recipe, k)) for k in range(2)]
    predictor = nn_pred.nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=True,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        copy.deepcopy(nets[0]),
        pm,
        pm.get_configuration(config),
        [copy.deepcopy(n.state_dict()) for n in nets],
        DATASET_JSON,
        "nnUNetTrainer",
        CONFIGS[config][2],
    )
    image, props = nn_sitk.SimpleITKIO().read_images([str(path)])
    with torch.inference_mode():
        seg, prob = predictor.predict_single_npy_array(image, props, None, None, True)
    return np.asarray(seg), np.asarray(prob)


@pytest.mark.parametrize("config", ["3d_fullres", "2d"])
def test_fold_ensemble_bundle_matches_nnunet_predictor(
    tmp_path: Path, cohort: Path, config: str
) -> None:
    recipe = _recipe(config)
    bundle = write_nnunet_bundle(tmp_path / "bundle", recipe, folds=2)
    path = sorted((cohort / "imagesTr").glob("*_0000.nii.gz"))[0]
    scan = load_scan([path])
    ref_seg, ref_prob = _oracle(config, recipe, path)  # (z, y, x), (K, z, y, x)
    manifest = Manifest.load(bundle)
    with Segmenter.from_bundle(bundle, "onnxruntime", threads=1) as segmenter:
        assert isinstance(segmenter.pipeline, NnunetPipeline) and segmenter.tta  # mirrors
        result = segmenter.segment(
            scan.image, probabilities=True, affine=scan.affine, spacing=scan.spacing
        )
    assert segmenter.pipeline.accumulate == "float16"  # type: ignore[attr-defined]
    wide = Segmenter(
        fold_backends(bundle, manifest, "onnxruntime", "fp32", threads=1),
        manifest,
        batch_size=1,
        pipeline=NnunetPipeline(accumulate="float32"),
    )
    with wide:
        single = wide.segment(scan.image, probabilities=True, affine=scan.affine)
    assert result.labels.shape == scan.image.shape[1:] and result.labels.dtype == np.uint8
    assert isinstance(result.timing, NnunetTiming)
    assert list(result.timing.fold_inference_s) == ["0", "1"]
    assert all(s > 0 for s in result.timing.fold_inference_s.values())
    # measured on cohort cases: float16 accumulator 100 % of voxels, softmax max |diff| 4e-4 to
    # 6e-4; float32 accumulator 99.97-99.999 % of voxels, mean |diff| 1e-4 (max 0.11 at voxels
    # only window corners reach, where nnU-Net's float16 logits underflow to 0)
    for res, floor, tol in ((result, 0.9999, 1e-3), (single, 0.999, None)):
        labels = res.labels.transpose(2, 1, 0)
        probs = res.probabilities.transpose(0, 3, 2, 1)  # type: ignore[union-attr]
        assert (labels == ref_seg).mean() >= floor
        if tol is not None:  # nnU-Net's own float16 accumulator: same numbers
            np.testing.assert_allclose(probs, ref_prob, rtol=0, atol=tol)
        else:  # float32 accumulation: differs where nnU-Net's float16 weights underflow
            assert np.abs(probs - ref_prob).mean() < 1e-3


def test_fold_files_are_checked_and_listed(tmp_path: Path) -> None:
    recipe = _recipe("3d_fullres")
    bundle = write_nnunet_bundle(tmp_path / "b", recipe, folds=2)
    manifest = Manifest.load(bundle)
    paths = bundle_onnx_paths(manifest, bundle, "fp32")
    assert list(paths) == ["0", "1"]
    assert paths["1"] == bundle / "fold_1" / "model.onnx"
    with pytest.raises(ConfigError, match=r"is an nnU-Net fold ensemble \(one ONNX file per fold"):
        manifest.onnx_path(bundle, "fp32")
    paths["1"].write_bytes(paths["1"].read_bytes()[:-3])
    with pytest.raises(ConfigError, match=r"fold_1/model.onnx does not match the sha256"):
        Segmenter.from_bundle(bundle, "onnxruntime")
    with pytest.raises(ConfigError, match="--cuda-graph is a TensorRT option"):
        fold_backends(bundle, manifest, "onnxruntime", "fp32", cuda_graph=True)
    with pytest.raises(ConfigError, match="unknown backend 'trt'"):
        fold_backends(bundle, manifest, "trt", "fp32")


def test_manifest_schema_three_round_trips_and_refuses_inconsistency(tmp_path: Path) -> None:
    recipe = _recipe("3d_fullres")
    bundle = write_nnunet_bundle(tmp_path / "b", recipe, folds=2)
    raw = json.loads((bundle / "medseg.json").read_text())
    assert raw["schema_version"] == 3 and raw["preprocessing"]["kind"] == "nnunet"
    assert raw["input"]["layout"] == "NCDHW" and raw["folds"] == ["0", "1"]
    manifest = Manifest.load(bundle)
    assert manifest.preprocessing == recipe and manifest.to_dict() == raw
    bad = [
        ({**raw, "schema_version": 2}, "need schema_version 3"),
        ({**raw, "folds": ["0"]}, r"precisions.fp32.folds must list the folds \['0'\]"),
        (
            {**raw, "input": {**raw["input"], "depth": {"min": 8, "opt": 8, "max": 8}}},
            r"input patch \(8, 32, 32\) must be the nnU-Net patch_size \(24, 32, 32\)",
        ),
        ({**raw, "input": {**raw["input"], "layout": "NCHW"}}, "input.layout 'NCHW' must be"),
        ({**raw, "classes": {"background": 0}}, "must equal the nnU-Net labels"),
        (
            {**raw, "preprocessing": {**raw["preprocessing"], "tile_step_size": 2}},
            r"tile_step_size must be in \(0, 1\], got 2",
        ),
        (
            {**raw, "preprocessing": {**raw["preprocessing"], "kind": "monai"}},
            "preprocessing.kind 'monai' must be 'medseg' or 'nnunet'",
        ),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError, match=message):
            Manifest.from_dict(data)


def test_medseg_infer_writes_the_mask_with_the_scan_affine(tmp_path: Path, cohort: Path) -> None:
    from typer.testing import CliRunner

    from medseg.cli.app import app
    from medseg.data.nifti import load_nifti

    bundle = write_nnunet_bundle(tmp_path / "bundle", _recipe("2d"), folds=2)
    path = sorted((cohort / "imagesTr").glob("*_0000.nii.gz"))[1]
    out = tmp_path / "mask.nii.gz"
    result = CliRunner().invoke(
        app, ["infer", str(bundle), str(path), "--out", str(out), "--no-tta"]
    )
    assert result.exit_code == 0, result.output
    assert "cost per fold: fold 0 " in result.output and ", fold 1 " in result.output
    image, mask = load_nifti(path), load_nifti(out)
    assert mask.shape == image.shape and np.allclose(mask.affine, image.affine)
    assert set(np.unique(np.asarray(mask.data))) <= {0, 1, 2}
    args = ["bench", str(bundle), "--data", str(cohort), "--precisions", "fp32", "--split", "all"]
    args += ["--batch", "2"]
    bench = CliRunner().invoke(app, args)
    assert bench.exit_code == 2 and "but the bundle's classes are" in bench.output
