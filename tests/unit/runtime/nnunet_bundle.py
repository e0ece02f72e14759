"""A real (hand-built) nnU-Net fold-ensemble bundle for runtime tests, and its torch twin.

Each fold is a small network ``Conv(3) -> Tanh -> Conv(3)`` (2D or 3D, zero padding) written
with ``onnx.helper`` at the recipe's static patch with a dynamic batch, in ``fold_<k>/model.onnx``
(the layout of manifest schema 3). :func:`nnunet_manifest` is the ``Manifest`` constructor
example for an nnU-Net bundle (the importer/exporter builds its manifest the same way);
:func:`torch_fold` gives the same network in torch for ``nnUNetPredictor``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import (
    NNUNET_SCHEMA_VERSION,
    ONNX_FILES,
    DimRange,
    FoldFile,
    InputSpec,
    PrecisionEntry,
    ensemble_sha256,
    file_sha256,
    fold_dir,
)
from medseg.bundle.manifest import Manifest
from medseg.transforms.nnunet_recipe import NnunetRecipe

HIDDEN = 4

LABELS = {"background": 0, "a": 1, "b": 2}
DATASET_JSON = {"channel_names": {"0": "T1"}, "labels": LABELS, "file_ending": ".nii.gz"}
CONFIGS = {
    "3d_fullres": ([2.4, 2.2, 2.6], [24, 32, 32], (0, 1, 2)),
    "2d": ([2.0, 2.2], [48, 64], (0, 1)),
}


def nnunet_plans(config: str) -> dict:
    """A ``plans.json`` in nnU-Net v2's format (transposed axes, CT statistics unused)."""
    spacing, patch, _ = CONFIGS[config]
    kw = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    conf = {
        "data_identifier": f"nnUNetPlans_{config}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch,
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [True],
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
            "0": {"mean": 1.0, "std": 1.0, "percentile_00_5": 0.0, "percentile_99_5": 2.0}
        },
    }


def plans_recipe(config: str, labels: dict[str, int] | None = None) -> NnunetRecipe:
    """The :class:`NnunetRecipe` of :func:`nnunet_plans` (``labels``: the dataset's)."""
    dataset = dict(DATASET_JSON, labels=dict(labels or LABELS))
    return NnunetRecipe.from_plans(nnunet_plans(config), dataset, config, CONFIGS[config][2])


def fold_weights(recipe: NnunetRecipe, seed: int) -> dict[str, np.ndarray]:
    """Weights of one fold: ``w1 (4, C, 3..)``, ``b1``, ``w2 (K, 4, 3..)``, ``b2``."""
    rng = np.random.default_rng(seed)
    k = (3,) * recipe.ndim
    c, classes = recipe.num_input_channels, recipe.num_classes
    return {
        "w1": (rng.normal(size=(HIDDEN, c, *k)) * 0.4).astype(np.float32),
        "b1": (rng.normal(size=HIDDEN) * 0.1).astype(np.float32),
        "w2": (rng.normal(size=(classes, HIDDEN, *k)) * 0.5).astype(np.float32),
        "b2": np.linspace(0.3, -0.3, classes).astype(np.float32),
    }


def write_fold_onnx(path: Path, recipe: NnunetRecipe, weights: dict[str, np.ndarray]) -> Path:
    """The fold's ONNX file (input ``image``, output ``logits``, dynamic batch ``N``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nd = recipe.ndim
    pads = [1] * (2 * nd)
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["h"], pads=pads, kernel_shape=[3] * nd),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Conv", ["t", "w2", "b2"], ["logits"], pads=pads, kernel_shape=[3] * nd),
    ]
    patch = list(recipe.patch_size)
    c, k = recipe.num_input_channels, recipe.num_classes
    graph = helper.make_graph(
        nodes,
        "nnunet-fold-test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, *patch])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k, *patch])],
        [numpy_helper.from_array(v, n) for n, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def torch_fold(recipe: NnunetRecipe, weights: dict[str, np.ndarray]) -> Any:
    """The same network as a torch module (for ``nnUNetPredictor``)."""
    import torch

    conv = torch.nn.Conv3d if recipe.ndim == 3 else torch.nn.Conv2d
    c, k = recipe.num_input_channels, recipe.num_classes
    net = torch.nn.Sequential(
        conv(c, HIDDEN, 3, padding=1), torch.nn.Tanh(), conv(HIDDEN, k, 3, padding=1)
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(weights["w1"]))
        net[0].bias.copy_(torch.from_numpy(weights["b1"]))
        net[2].weight.copy_(torch.from_numpy(weights["w2"]))
        net[2].bias.copy_(torch.from_numpy(weights["b2"]))
    return net.eval()


def nnunet_manifest(
    recipe: NnunetRecipe,
    fold_files: dict[str, dict[str, FoldFile]],
    batch: DimRange,
    source: dict[str, Any],
) -> Manifest:
    """The ``Manifest`` of an nnU-Net bundle (schema 3).

    Args:
        recipe: the configuration's :class:`NnunetRecipe`.
        fold_files: ``{precision: {fold: FoldFile}}`` (every precision lists every fold).
        batch: the batch range of every fold's model (the patch is static).
        source: the nnU-Net facts (``kind: "nnunet"``, dataset, trainer, plans, checkpoint).
    """
    spec = InputSpec.static_patch("image", recipe.num_input_channels, batch, recipe.patch_size)
    precisions = {}
    for precision, folds in fold_files.items():
        digests = {f: item.sha256 for f, item in folds.items()}
        precisions[precision] = PrecisionEntry(
            file=ONNX_FILES[precision],
            sha256=ensemble_sha256(digests),
            size_bytes=sum(item.size_bytes for item in folds.values()),
            parity={},
            folds=dict(folds),
        )
    first = next(iter(fold_files.values()))
    return Manifest(
        model={"arch": "nnunet", "name": "nnunet-test", "configuration": recipe.configuration},
        classes=dict(recipe.labels),
        input=spec,
        output_name="logits",
        preprocessing=recipe,
        precisions=precisions,
        calibration=None,
        source=source,
        tool_versions={},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        schema_version=NNUNET_SCHEMA_VERSION,
        orientation=None,  # nnU-Net's readers do not reorient (NibabelIOWithReorient: RAS)
        folds=tuple(first),
    )


def write_fp16_onnx(fp32: Path, out: Path) -> Path:
    """An FP16 copy of a fold's file with FP32 I/O (onnxconverter-common's converter)."""
    import onnx
    from onnxconverter_common import float16

    model = float16.convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


def write_nnunet_bundle(
    root: Path, recipe: NnunetRecipe, folds: int = 2, fp16: bool = False
) -> Path:
    """Write ``root/medseg.json`` + ``root/fold_<k>/model.onnx`` (FP32; with ``fp16`` also
    ``model.fp16.onnx``); returns ``root``."""
    files: dict[str, FoldFile] = {}
    half: dict[str, FoldFile] = {}
    for k in range(folds):
        rel = f"{fold_dir(str(k))}/{ONNX_FILES['fp32']}"
        path = write_fold_onnx(root / rel, recipe, fold_weights(recipe, k))
        files[str(k)] = FoldFile(rel, file_sha256(path), path.stat().st_size)
        if fp16:
            rel16 = f"{fold_dir(str(k))}/{ONNX_FILES['fp16']}"
            p16 = write_fp16_onnx(path, root / rel16)
            half[str(k)] = FoldFile(rel16, file_sha256(p16), p16.stat().st_size)
    source = {
        "kind": "nnunet",
        "dataset": "Dataset001_Cohort",
        "trainer": "nnUNetTrainer",
        "plans": "nnUNetPlans",
        "configuration": recipe.configuration,
        "folds": list(files),
        "checkpoint": "checkpoint_final.pth",
    }
    fold_files = {"fp32": files, **({"fp16": half} if fp16 else {})}
    manifest = nnunet_manifest(recipe, fold_files, DimRange(1, 2, 4), source)
    manifest.save(root)
    return root
