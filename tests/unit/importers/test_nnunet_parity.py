"""Parity of an exported nnU-Net bundle with nnU-Net itself (``nnUNetPredictor``).

Both sides get the same unseen cohort cases, the same two folds, nnU-Net's mirroring axes and
tile step 0.5. Ours: the public runtime path, ``Segmenter.from_bundle(bundle, "onnxruntime")``
(what ``medseg infer`` runs on an nnU-Net bundle: nnU-Net preprocessing, the N-D sliding window
with nnU-Net's float16 accumulation, the fold ensemble, resampling back) with each fold's FP32
ONNX file on ONNX Runtime CPU, at its default batch. The oracle: the three calls of
``nnUNetPredictor.predict_single_npy_array`` (nnU-Net's preprocessing adapter,
``predict_logits_from_preprocessed_data``, ``convert_predicted_logits_to_segmentation_with_
correct_shape``) on the image read by nnU-Net's SimpleITKIO, keeping the fold-mean logits. The
issue's bar: >= 99.9 % of voxels agree, softmax within 1e-3.

Why 3d_fullres misses the softmax bar (measured, tests/unit/runtime/test_sliding_window_nnunet.py
and the test below): with nnU-Net's own PyTorch network our window reproduces nnU-Net's logits
bit for bit; ONNX Runtime's convolutions differ from PyTorch's by up to 1.5e-4 per window. At
voxels near the image corners the summed Gaussian weight in nnU-Net's float16 accumulator is
subnormal (below 2**-14, 7 % and 10 % of the voxels of the two cases): there the weighted
logits are held to a few steps of 2**-24, so nnU-Net's result is its own rounding noise, and
a 1e-4 change of a network output moves a logit by up to 0.067. Everywhere else the softmax
agrees within 2.5e-4.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

MIN_AGREEMENT = 0.999
MAX_PROB_DIFF = 1e-3


@pytest.fixture(scope="session")
def unseen_cases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.data.mni152_cohort import write_mni152_cohort

    out = tmp_path_factory.mktemp("unseen") / "unseen"
    write_mni152_cohort(out, cases=2, seed=11, inplane_mm=(3.0, 4.0), thickness_mm=(4.0, 6.0))
    return out


@pytest.fixture(scope="session")
def bundles(
    nnunet_results: dict[str, Path], cohort_raw: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two-fold bundles: 2d FP32; 3d_fullres FP32, FP16 and INT8 (calibrated on the cohort)."""
    from medseg.export.nnunet_export import NnunetExportOptions, export_nnunet
    from medseg.importers.nnunet import import_nnunet

    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for configuration, folder in nnunet_results.items():
        run = root / f"run-{configuration}"
        import_nnunet(folder, run, folds=("0", "1"))
        out[configuration] = root / f"bundle-{configuration}"
        if configuration == "3d_fullres":
            options = NnunetExportOptions(
                fp16=True, int8=True, calib_data=cohort_raw, calib_patches=8
            )
        else:
            options = NnunetExportOptions(calib_patches=4)
        export_nnunet(run, out[configuration], options)
    return out


def _ours(bundle: Path, image_file: Path, precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(z, y, x)`` and probabilities ``(K, z, y, x)`` (SimpleITK's order)."""
    from medseg.runtime import Segmenter, load_scan

    scan = load_scan([image_file])
    with Segmenter.from_bundle(bundle, "onnxruntime", precision, threads=1) as segmenter:
        result = segmenter.segment(
            scan.image, probabilities=True, affine=scan.affine, spacing=scan.spacing
        )
    assert result.probabilities is not None
    return result.labels.transpose(2, 1, 0), result.probabilities.transpose(0, 3, 2, 1)


@pytest.fixture(scope="session")
def oracle(nnunet_results: dict[str, Path], unseen_cases: Path) -> dict[tuple[str, str], Any]:
    """``{(configuration, case file): (preprocessed data, fold-mean logits, labels, probs)}``."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
    from nnunetv2.inference.export_prediction import (
        convert_predicted_logits_to_segmentation_with_correct_shape as to_original,
    )
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(1)
    out = {}
    for configuration, folder in nnunet_results.items():
        p = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=True,
            perform_everything_on_device=False,
            device=torch.device("cpu"),
            verbose=False,
            allow_tqdm=False,
        )
        p.initialize_from_trained_model_folder(str(folder), (0, 1))
        for image_file in sorted((unseen_cases / "imagesTr").glob("*.nii.gz")):
            image, props = SimpleITKIO().read_images([str(image_file)])
            adapter = PreprocessAdapterFromNpy(
                [image], [None], [props], [None], p.plans_manager, p.dataset_json,
                p.configuration_manager, num_threads_in_multithreaded=1, verbose=False,
            )  # fmt: skip
            dct = next(adapter)
            logits = p.predict_logits_from_preprocessed_data(dct["data"]).cpu()
            seg, probs = to_original(
                logits.clone(), p.plans_manager, p.configuration_manager, p.label_manager,
                dct["data_properties"], return_probabilities=True,
            )  # fmt: skip
            out[configuration, image_file.name] = (
                dct["data"].numpy(), logits.numpy(), np.asarray(seg), np.asarray(probs),
            )  # fmt: skip
    return out


_SOFTMAX_3D = pytest.mark.xfail(
    reason="3d_fullres misses the softmax bar (measured 2026-12-02 through Segmenter."
    "from_bundle: voxels 100 % and 100 %, max |softmax diff| 1.02e-3 and 2.03e-3; 2d 2.0e-4). "
    "Cause (test_3d_softmax_misses_only_where_nnunet_weights_are_subnormal): nnU-Net's own "
    "float16 accumulator holds voxels of subnormal summed Gaussian weight to steps of 2**-24, "
    "and ONNX Runtime's 1.5e-4 conv differences from PyTorch move those logits by up to 0.067",
    strict=False,
)


@pytest.mark.parametrize("configuration", ["2d", pytest.param("3d_fullres", marks=_SOFTMAX_3D)])
def test_fp32_bundle_matches_nnunet_predictor(
    configuration: str,
    bundles: dict[str, Path],
    oracle: dict[tuple[str, str], Any],
    unseen_cases: Path,
) -> None:
    figures = []
    for image_file in sorted((unseen_cases / "imagesTr").glob("*.nii.gz")):
        *_, ref_seg, ref_probs = oracle[configuration, image_file.name]
        seg, probs = _ours(bundles[configuration], image_file)
        assert seg.shape == ref_seg.shape and probs.shape == ref_probs.shape
        agreement = float((seg == ref_seg).mean())
        prob_diff = float(np.abs(probs - ref_probs).max())
        figures.append((image_file.name, agreement, prob_diff))
    print(f"\n{configuration} parity vs nnUNetPredictor (case, voxel agreement, max |dp|):")
    for name, agreement, prob_diff in figures:
        print(f"  {name}: {agreement:.6f} {prob_diff:.2e}")
    for name, agreement, prob_diff in figures:
        assert agreement >= MIN_AGREEMENT, (name, agreement)
        assert prob_diff <= MAX_PROB_DIFF, (name, prob_diff)


def _subnormal_weight(shape: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    """Voxels whose summed float16 Gaussian weight (nnU-Net's ``n_predictions``) is subnormal."""
    from medseg.runtime.sliding_window import accumulation_gaussian, pad_to_patch, window_starts

    padded, region = pad_to_patch(np.zeros((1, 1, *shape), dtype=np.float32), patch)
    size = padded.shape[2:]
    g = accumulation_gaussian(patch, np.float16)
    weight = np.zeros(size, dtype=np.float16)
    for corner in itertools.product(
        *[window_starts(s, p, 0.5) for s, p in zip(size, patch, strict=True)]
    ):
        weight[tuple(slice(o, o + p) for o, p in zip(corner, patch, strict=True))] += g
    return np.asarray(weight[region] < np.finfo(np.float16).tiny)


def test_3d_softmax_misses_only_where_nnunet_weights_are_subnormal(
    bundles: dict[str, Path], oracle: dict[tuple[str, str], Any]
) -> None:
    """The proof of the 3d_fullres xfail: on nnU-Net's preprocessed data, the ONNX folds'
    float16 fold-mean logits against nnU-Net's, softmax on the network grid."""
    import json

    import onnxruntime as ort

    from medseg.data.nnunet_recipe import NnunetRecipe
    from medseg.runtime.segmenter import softmax
    from medseg.runtime.sliding_window import predict_ensemble_windows

    bundle = bundles["3d_fullres"]
    recipe = NnunetRecipe.from_dict(
        json.loads((bundle / "nnunet.json").read_text())["preprocessing"]
    )
    sessions = [
        ort.InferenceSession(
            str(bundle / f"fold_{f}" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        for f in ("0", "1")
    ]
    figures = []
    for (configuration, name), (data, ref_logits, _, _) in sorted(oracle.items()):
        if configuration != "3d_fullres":
            continue
        logits = predict_ensemble_windows(
            data,
            [lambda x, s=s: s.run(None, {"image": x})[0] for s in sessions],
            recipe.patch_size,
            max_batch=4,
            overlap=1.0 - recipe.tile_step_size,
            mirror_axes=recipe.mirror_axes,
            accumulate="float16",
        )
        ours, ref = logits.astype(np.float32), ref_logits.astype(np.float32)
        dp = np.abs(softmax(ours, 0) - softmax(ref, 0)).max(axis=0)
        sub = _subnormal_weight(data.shape[1:], recipe.patch_size)
        figures.append((name, float(sub.mean()), float(dp[~sub].max()), float(dp[sub].max())))
    print("\n3d_fullres softmax |dp| (case, subnormal share, max elsewhere, max there):")
    for name, share, normal, subnormal in figures:
        print(f"  {name}: {share:.3f} {normal:.2e} {subnormal:.2e}")
    assert figures
    for name, share, normal, _ in figures:
        assert 0 < share < 0.2, (name, share)
        assert normal <= 0.5 * MAX_PROB_DIFF, (name, normal)  # measured 2.5e-4
    assert max(f[3] for f in figures) > MAX_PROB_DIFF  # the xfail's numbers come from there


def test_fp16_int8_bundles_dice_drop(bundles: dict[str, Path], unseen_cases: Path) -> None:
    """3d_fullres, two folds: FP16 and INT8 files pass the export guard; their masks through
    the public runtime path are compared with the FP32 bundle's (Dice vs FP32, mean over classes
    present). The networks are untrained: Dice against the reference labels means nothing."""
    import json

    from medseg.bundle import Manifest, bundle_onnx_paths
    from medseg.export.nnunet_export import FP16_MIN_AGREEMENT

    bundle = bundles["3d_fullres"]
    report = json.loads((bundle / "export.json").read_text())
    assert set(report["folds"]) == {"0", "1"}
    for entries in report["folds"].values():
        assert entries["fp32"]["vs_pytorch"]["max_abs_diff"] <= 1e-3
        assert entries["fp16"]["vs_fp32"]["argmax_agreement"] >= FP16_MIN_AGREEMENT
        assert entries["int8"]["quantized_nodes"] > 0
        assert entries["int8"]["vs_fp32"]["finite"]
    manifest = Manifest.load(bundle)
    assert manifest.folds == ("0", "1") and set(manifest.precisions) == {"fp32", "fp16", "int8"}
    paths = bundle_onnx_paths(manifest, bundle, "int8")  # sha256-checked
    assert paths == {f: bundle / f"fold_{f}" / "model.int8.onnx" for f in ("0", "1")}
    image_file = sorted((unseen_cases / "imagesTr").glob("*.nii.gz"))[0]
    ref, _ = _ours(bundle, image_file)
    drops = {}
    for precision in ("fp16", "int8"):
        seg, _ = _ours(bundle, image_file, precision)
        dices = []
        for k in np.unique(np.concatenate([np.unique(ref), np.unique(seg)])):
            a, b = ref == k, seg == k
            dices.append(2.0 * float((a & b).sum()) / float(a.sum() + b.sum()))
        drops[precision] = 100.0 * (1.0 - float(np.mean(dices)))
    print(f"\nDice drop vs FP32 (points, {image_file.name}): {drops}")
    assert drops["fp16"] <= 0.5, drops
