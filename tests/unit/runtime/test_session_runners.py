"""Manifest-less runners (:mod:`medseg.runtime.backends.session`) and ``Backend.available``.

The model is a real ONNX file made here: a 1x1 convolution with two outputs (logits and
their ReLU), run by ONNX Runtime and OpenVINO, checked against numpy.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.runtime.backends import backend_class, installed_cpu_backends
from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner
from medseg.runtime.backends.openvino import OpenVinoRunner
from medseg.runtime.backends.runners import runner_from_path
from medseg.runtime.backends.session import run_batches

RNG = np.random.default_rng(0)
WEIGHT = RNG.normal(size=(3, 2, 1, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def conv_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w"], ["logits"]),
            helper.make_node("Relu", ["logits"], ["relu"]),
        ],
        "conv",
        [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["n", 2, 8, 8])],
        [
            helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 3, 8, 8]),
            helper.make_tensor_value_info("relu", onnx.TensorProto.FLOAT, ["n", 3, 8, 8]),
        ],
        [onnx.numpy_helper.from_array(WEIGHT, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("runner") / "conv.onnx"
    onnx.save(model, str(path))
    return path


def _expected(batch: np.ndarray) -> np.ndarray:
    return np.einsum("kc,nchw->nkhw", WEIGHT[:, :, 0, 0], batch)


def test_onnxruntime_runner_reads_its_io_from_the_session(conv_onnx: Path) -> None:
    from medseg.runtime.backends.onnxruntime import SessionFromOnnx

    batch = RNG.normal(size=(5, 2, 8, 8)).astype(np.float32)
    from_path = OnnxRuntimeRunner(conv_onnx)
    assert from_path.input_names == ("image",)
    assert from_path.output_names == ("logits", "relu")
    logits = from_path(batch)
    assert logits.dtype == np.float32 and logits.shape == (5, 3, 8, 8)
    np.testing.assert_allclose(logits, _expected(batch), rtol=1e-5, atol=1e-5)
    both = from_path.infer({"image": batch})
    np.testing.assert_array_equal(both["relu"], np.maximum(both["logits"], 0))
    assert from_path.last_ms > 0
    # from a session, or from a loader: the same numbers
    loader = SessionFromOnnx(conv_onnx, providers=["cpu"])
    for given in (loader, loader()):
        np.testing.assert_array_equal(OnnxRuntimeRunner(given)(batch), logits)
    # in batches: the same as one call
    np.testing.assert_array_equal(run_batches(from_path, batch, batch_size=2), logits)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_runner_matches_onnxruntime(conv_onnx: Path) -> None:
    batch = RNG.normal(size=(4, 2, 8, 8)).astype(np.float32)
    runner = runner_from_path(conv_onnx, "openvino")
    assert isinstance(runner, OpenVinoRunner)
    assert runner.input_names == ("image",) and runner.output_names[0] == "logits"
    first = runner(batch[:2])
    second = runner(batch[2:])  # the first result is a copy: OpenVINO reuses its tensors
    np.testing.assert_allclose(first, _expected(batch[:2]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(second, _expected(batch[2:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        run_batches(runner, batch, 3), OnnxRuntimeRunner(conv_onnx)(batch), atol=1e-5
    )


def test_runner_from_path_refuses_other_backends(conv_onnx: Path) -> None:
    with pytest.raises(ConfigError, match="unknown CPU backend 'tensorrt'"):
        runner_from_path(conv_onnx, "tensorrt")


def test_each_backend_says_whether_it_runs_here() -> None:
    assert backend_class("onnxruntime").available() is None  # a runtime dependency
    openvino = backend_class("openvino").available()
    if importlib.util.find_spec("openvino") is None:
        assert openvino is not None and "pip install 'medseg-edge[openvino]'" in openvino
    else:
        assert openvino is None
    assert installed_cpu_backends() == tuple(
        b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b)
    )
    if not any(importlib.util.find_spec(m) for m in ("tensorrt", "tensorrt_lean")):
        reason = backend_class("tensorrt").available()
        assert reason is not None and "TensorRT is not installed" in reason
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt-llm'"):
        backend_class("tensorrt-llm")
