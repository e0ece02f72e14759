"""A real (hand-built) ONNX bundle with a ``"window"`` recipe, for runtime tests.

The network is a small convolution (3x3, zero padding) from one MR channel to three classes,
written with ``onnx.helper`` at a static ``PATCH`` input with a dynamic batch axis, exactly
the shape contract ``medseg export`` writes for window recipes. It thresholds the normalised
intensity, so its masks follow the image; the 3x3 context makes windows matter.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from medseg.bundle.entries import SCHEMA_VERSION, DimRange, InputSpec, PrecisionEntry, file_sha256
from medseg.bundle.manifest import Manifest
from medseg.transforms.postprocess import Postprocess
from medseg.transforms.preprocessing import Recipe

PATCH = (32, 64)
CLASSES = {"background": 0, "low": 1, "high": 2}


def write_window_bundle(
    root: Path,
    *,
    kernel: int = 3,
    target_spacing: tuple[float, float] | None = (1.0, 1.0),
    batch: tuple[int, int, int] = (1, 4, 8),
    postprocess: Postprocess | None = None,
    slice_axis: int = 2,
) -> Path:
    """Write ``root/medseg.json`` + ``root/model.onnx``; returns ``root``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centre = np.zeros((3, 1, kernel, kernel), dtype=np.float32)
    centre[:, 0, kernel // 2, kernel // 2] = [-1.0, 0.3, 1.5]
    weight = centre + 0.05 * rng.normal(size=centre.shape).astype(np.float32)
    bias = np.array([0.0, 0.2, -0.9], dtype=np.float32)
    conv = helper.make_node(
        "Conv", ["image", "w", "b"], ["logits"], pads=[kernel // 2] * 4, kernel_shape=[kernel] * 2
    )
    graph = helper.make_graph(
        [conv],
        "window-test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, *PATCH])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, *PATCH])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = root / "model.onnx"
    onnx.save(model, str(path))
    recipe = Recipe(
        modality="MR",
        slice_axis=slice_axis,
        size_policy="window",
        patch_size=PATCH,
        target_spacing=target_spacing,
        mirror_axes=(0, 1),
    )
    entry = PrecisionEntry("model.onnx", file_sha256(path), path.stat().st_size, {}, {}, {})
    manifest = Manifest(
        model={"arch": "conv-test", "name": "window-test"},
        classes=dict(CLASSES),
        input=InputSpec(
            "image",
            1,
            DimRange(*batch),
            DimRange(PATCH[0], PATCH[0], PATCH[0]),
            DimRange(PATCH[1], PATCH[1], PATCH[1]),
        ),
        output_name="logits",
        preprocessing=recipe,
        precisions={"fp32": entry},
        calibration=None,
        source={},
        tool_versions={},
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        schema_version=SCHEMA_VERSION,
        orientation="RAS",
        plan={"note": "hand-built test bundle"},
        postprocess=postprocess,
    )
    manifest.save(root)
    return root
