"""INT8 Q/DQ quantisation with modelopt on the tiny attention-fusion network, calibrated on
real MNI152 slices (cropped to 64x64); real modelopt and ONNX Runtime, no mocks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from calib_testutils import SIZE, run, snr_db

from medseg.calibration import (
    CalibrationMethod,
    Int8Config,
    Int8Result,
    convert_precision,
    quantize_int8,
    quantized_nodes,
)
from medseg.errors import ConfigError, DatasetError


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def _has_qdq(node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], i: int) -> bool:
    dq = producer.get(node.input[i])
    if dq is None or dq.op_type != "DequantizeLinear":
        return False
    q = producer.get(dq.input[0])
    return q is not None and q.op_type == "QuantizeLinear"


def _channels(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[int, int]:
    weights = {init.name: init for init in model.graph.initializer}
    producer = _producers(model)
    name = node.input[1]
    while name not in weights:  # through Q/DQ to the FP32 weight
        name = producer[name].input[0]
    out_ch, in_ch = weights[name].dims[:2]
    return int(in_ch), int(out_ch)


def test_every_conv_gets_qdq_inputs_and_stays_close_to_fp32(
    tiny_onnx: Path, int8_model: tuple[Path, Int8Result], calibration: np.ndarray
) -> None:
    path, result = int8_model
    model = onnx.load(str(path))
    producer = _producers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(result.quantized_nodes) >= 0.7 * len(convs)
    assert result.method is CalibrationMethod.MAX
    assert result.num_calibration_slices == 16 and result.excluded_nodes == ()
    for conv in convs:
        if conv.name in result.quantized_nodes:
            assert _has_qdq(conv, producer, 0) and _has_qdq(conv, producer, 1), conv.name
        else:
            # modelopt's own rule: convolutions with < 16 input or output channels stay
            # FP32 (TensorRT runs them faster unquantised); reported as skipped
            assert conv.name in result.skipped_nodes
            assert min(_channels(model, conv)) < 16, conv.name
    assert quantized_nodes(model) == list(result.quantized_nodes)
    # the non-quantised part stays FP32 (high_precision_dtype="fp32")
    assert not any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)

    # dynamic batch still works; logits close to FP32 on the calibration slices
    fp32, int8 = run(tiny_onnx, calibration), run(path, calibration)
    assert int8.shape == fp32.shape == (16, 4, SIZE, SIZE)
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.9
    assert snr_db(fp32, int8) > 25.0
    assert run(path, calibration[:3]).shape == (3, 4, SIZE, SIZE)


def test_excluding_a_node_removes_its_qdq(
    tiny_onnx: Path, int8_model: tuple[Path, Int8Result], calibration: np.ndarray, tmp_path: Path
) -> None:
    full_path, full = int8_model
    # a convolution whose quantised input it shares with another one (the first encoder
    # convolution and its shortcut both read the image): modelopt keeps the shared Q/DQ
    # in front of it too; quantize_int8 must feed it the FP32 tensor
    consumers: dict[str, list[str]] = {}
    for node in onnx.load(str(full_path)).graph.node:
        if node.name in full.quantized_nodes:
            consumers.setdefault(node.input[0], []).append(node.name)
    name = next(names[0] for names in consumers.values() if len(names) > 1)
    # modelopt matches nodes_to_exclude with re.match, a prefix match: excluding a skipped
    # node whose name prefixes quantised ones must not exclude those
    prefix = next(
        s for s in full.skipped_nodes if any(q.startswith(s) for q in full.quantized_nodes)
    )
    config = Int8Config(nodes_to_exclude=(name, prefix))
    out = tmp_path / "excluded.int8.onnx"
    result = quantize_int8(tiny_onnx, out, calibration[:8], config)
    assert result.excluded_nodes == (name, prefix)
    assert name not in result.quantized_nodes and name not in result.skipped_nodes
    assert set(result.quantized_nodes) == set(full.quantized_nodes) - {name}
    model = onnx.load(str(out))
    node = next(n for n in model.graph.node if n.name == name)
    producer = _producers(model)
    assert not _has_qdq(node, producer, 0) and not _has_qdq(node, producer, 1)
    assert run(out, calibration[:2]).shape == (2, 4, SIZE, SIZE)


def test_entropy_calibration_works_quietly(
    tiny_onnx: Path,
    int8_model: tuple[Path, Int8Result],
    calibration: np.ndarray,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    modelopt_logger = logging.getLogger("modelopt.onnx")
    before = (modelopt_logger.level, list(modelopt_logger.handlers))
    out = tmp_path / "entropy.int8.onnx"
    result = convert_precision(
        tiny_onnx, out, "int8", calibration=calibration[:8], int8=Int8Config("entropy")
    )
    # modelopt's logs, ONNX Runtime's histogram prints and progress bars stay off the
    # terminal, and modelopt's logger is left as it was
    assert capfd.readouterr() == ("", "")
    assert (modelopt_logger.level, list(modelopt_logger.handlers)) == before
    assert isinstance(result, Int8Result) and result.method is CalibrationMethod.ENTROPY
    assert result.quantized_nodes == int8_model[1].quantized_nodes
    fp32, int8 = run(tiny_onnx, calibration[:8]), run(out, calibration[:8])
    assert (int8.argmax(1) == fp32.argmax(1)).mean() > 0.9
    assert result.to_manifest()["calibration_method"] == "entropy"


def test_bad_inputs(tiny_onnx: Path, calibration: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(ConfigError, match="'no_such_node'"):
        quantize_int8(tiny_onnx, out, calibration, Int8Config(nodes_to_exclude=("no_such_node",)))
    with pytest.raises(ConfigError, match=r"'minmax'.*accepted: max, entropy"):
        Int8Config(method="minmax")  # type: ignore[arg-type]
    bad = calibration.copy()
    bad[2, 0, 0, 0] = np.nan
    with pytest.raises(DatasetError, match="sample 2 contains NaN"):
        quantize_int8(tiny_onnx, out, bad)
    with pytest.raises(DatasetError, match=r"3 channels .* accepts 1"):
        quantize_int8(tiny_onnx, out, np.zeros((4, 3, SIZE, SIZE), np.float32))
    with pytest.raises(ConfigError, match="needs calibration slices"):
        convert_precision(tiny_onnx, out, "int8")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        convert_precision(tiny_onnx, out, "int4")
    assert not out.exists() and list(tmp_path.iterdir()) == []
