"""A 3D (NCDHW) network builds with TensorRT-RTX from the manifest's 5D profile.

The ONNX file is a real 3D convolution with a static ``(D, H, W)`` patch and a dynamic batch,
the shape contract of an imported nnU-Net 3d_fullres fold; ``add_profile`` turns the
manifest's ``input.depth``/``height``/``width`` and batch range into a 5D profile.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from medseg.build import BuildOptions
from medseg.build.engine import compile_plan, open_runtime
from medseg.build.network import profile_record
from medseg.bundle.entries import (
    NNUNET_SCHEMA_VERSION,
    DimRange,
    FoldFile,
    InputSpec,
    PrecisionEntry,
    ensemble_sha256,
    file_sha256,
)
from medseg.bundle.manifest import Manifest
from medseg.transforms.nnunet_recipe import NnunetNormalization, NnunetRecipe

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")
onnx = pytest.importorskip("onnx")

PATCH = (16, 24, 32)


def _conv3d(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(3, 1, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["logits"], pads=[1] * 6, kernel_shape=[3] * 3)],
        "conv3d",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, *PATCH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, *PATCH])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_a_3d_patch_builds_with_a_5d_profile(tmp_path: Path) -> None:
    path = _conv3d(tmp_path / "fold_0" / "model.onnx")
    recipe = NnunetRecipe(
        configuration="3d_fullres",
        image_reader="SimpleITKIO",
        transpose_forward=(0, 1, 2),
        transpose_backward=(0, 1, 2),
        spacing=(1.0, 1.0, 1.0),
        patch_size=PATCH,
        normalization=(NnunetNormalization("ZScoreNormalization"),),
        labels={"background": 0, "a": 1, "b": 2},
        num_input_channels=1,
    )
    fold = FoldFile("fold_0/model.onnx", file_sha256(path), path.stat().st_size)
    spec = InputSpec(
        "image",
        1,
        DimRange(1, 2, 4),
        DimRange(PATCH[1], PATCH[1], PATCH[1]),
        DimRange(PATCH[2], PATCH[2], PATCH[2]),
        layout="NCDHW",
        depth=DimRange(PATCH[0], PATCH[0], PATCH[0]),
    )
    entry = PrecisionEntry(
        "model.onnx", ensemble_sha256({"0": fold.sha256}), fold.size_bytes, {}, folds={"0": fold}
    )
    manifest = Manifest(
        model={"arch": "nnunet"},
        classes=dict(recipe.labels),
        input=spec,
        output_name="logits",
        preprocessing=recipe,
        precisions={"fp32": entry},
        calibration=None,
        source={"kind": "nnunet"},
        tool_versions={},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        schema_version=NNUNET_SCHEMA_VERSION,
        folds=("0",),
    )
    options = BuildOptions(runtime="tensorrt-rtx")
    adapter = open_runtime(options)
    plan, _report, config = compile_plan(adapter, path, manifest, "fp32", options)
    assert len(plan) > 1000 and config.num_optimization_profiles == 1
    assert profile_record(spec)["depth"] == {"min": 16, "opt": 16, "max": 16}
    assert list(profile_record(spec)) == ["batch", "depth", "height", "width"]
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan)
    if engine is not None:  # deserialising needs a GPU for some RTX versions
        shapes = engine.get_tensor_profile_shape("image", 0)
        assert [tuple(s) for s in shapes] == [(1, 1, *PATCH), (2, 1, *PATCH), (4, 1, *PATCH)]
