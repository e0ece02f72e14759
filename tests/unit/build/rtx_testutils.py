"""Hand-made ONNX graphs for the TensorRT-RTX tests (real files, parsed by the real parser)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from medseg.bundle.entries import ONNX_FILES, file_sha256


def conv_graph(path: Path, qdq_input: bool, qdq_weights: bool, bad_op: str | None = None) -> Path:
    """``image (N,1,32,48) -> [Q/DQ] -> Conv 3x3 (weights [Q/DQ]) -> [bad_op] -> logits``.

    The input of a ``(N, 1, 32, 48)`` toy bundle and its 3-class output, so the file can stand
    in for a bundle's ONNX. ``bad_op``: an operator appended before the output (e.g. ``Det``).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(np.array(0.05, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    nodes, x, w = [], "image", "conv.weight"
    if qdq_input:
        nodes += [
            helper.make_node("QuantizeLinear", [x, "scale", "zero"], ["x_q"], name="image_q"),
            helper.make_node(
                "DequantizeLinear", ["x_q", "scale", "zero"], ["x_dq"], name="image_dq"
            ),
        ]
        x = "x_dq"
    if qdq_weights:
        nodes += [
            helper.make_node("QuantizeLinear", [w, "scale", "zero"], ["w_q"], name="weight_q"),
            helper.make_node(
                "DequantizeLinear", ["w_q", "scale", "zero"], ["w_dq"], name="weight_dq"
            ),
        ]
        w = "w_dq"
    conv_out = "conv_out" if bad_op else "logits"
    nodes.append(helper.make_node("Conv", [x, w], [conv_out], name="the_conv", pads=[1, 1, 1, 1]))
    if bad_op:
        nodes.append(helper.make_node(bad_op, [conv_out], ["logits"], name=f"refused_{bad_op}"))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 32, 48])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    onnx.save(model, str(path))
    return path


def bundle_with(source: Path, dest: Path, precision: str, onnx_file: Path) -> Path:
    """A copy of bundle ``source`` whose ``precision`` file is ``onnx_file`` (manifest updated)."""
    bundle = Path(shutil.copytree(source, dest))
    target = bundle / ONNX_FILES[precision]
    shutil.copyfile(onnx_file, target)
    manifest = json.loads((bundle / "medseg.json").read_text())
    entry = manifest["precisions"][precision]
    entry.update(sha256=file_sha256(target), size_bytes=target.stat().st_size)
    (bundle / "medseg.json").write_text(json.dumps(manifest, indent=2))
    return bundle
