"""Static control flow: every architecture exports with the dynamo exporter (opset 18) with a
dynamic batch and dynamic H, W, and ONNX Runtime matches PyTorch on other shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim

from medseg.models import create_model


# torch.export itself triggers this deprecation inside torch (2.13); nothing of ours.
@pytest.mark.filterwarnings(
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning"
)
def test_dynamo_export_dynamic_shapes_matches_onnxruntime(arch: str, tmp_path: Path) -> None:
    # Every variant of an architecture runs the same code paths; "tiny" keeps this fast.
    model = create_model(arch, 1, 3, "tiny").eval()
    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 1, 32, 32),),
        str(path),
        dynamo=True,
        opset_version=18,
        dynamic_shapes=({0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC},),
        verbose=False,
    )
    graph = onnx.load(str(path)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    ops = {node.op_type for node in graph.node}
    assert not {"If", "Loop", "Scan"} & ops  # static control flow
    assert not {"InstanceNormalization", "BatchNormalization"} & ops  # BatchNorm folded

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 1, 48, 64)
    (actual,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert actual.shape == (3, 3, 48, 64)
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)
