"""The network report and parse errors from TensorRT-RTX's real ONNX parser (CPU only)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rtx_testutils import conv_graph

from medseg.build.network import network_report, parse_onnx
from medseg.bundle.network_report import NetworkReport
from medseg.errors import ConfigError, EngineBuildError

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")


def _report(path: Path, precision: str = "int8") -> NetworkReport:
    logger = trt.Logger(trt.Logger.ERROR)
    network = trt.Builder(logger).create_network(0)
    _parser = parse_onnx(trt, network, logger, path, "TensorRT-RTX")
    return network_report(trt, network, precision, path.name)


def test_conv_with_qdq_on_both_sides_runs_int8(tmp_path: Path) -> None:
    report = _report(conv_graph(tmp_path / "m.onnx", qdq_input=True, qdq_weights=True))
    assert report.convolutions == {"int8": 1, "fp16": 0, "fp32": 0}
    assert report.partial_qdq == () and report.warnings == ()
    assert report.layer_types["QUANTIZE"] == 2 and report.layer_types["DEQUANTIZE"] == 2
    assert report.layer_count == sum(report.layer_types.values())
    assert report.fp32_tensors == ("logits",)  # the conv output: no Q follows it


@pytest.mark.parametrize(
    ("qdq_input", "qdq_weights", "lacks"), [(True, False, "weights"), (False, True, "input")]
)
def test_conv_with_qdq_on_one_side_is_a_warning_naming_it(
    tmp_path: Path, qdq_input: bool, qdq_weights: bool, lacks: str
) -> None:
    report = _report(conv_graph(tmp_path / "m.onnx", qdq_input, qdq_weights))
    assert report.convolutions == {"int8": 0, "fp16": 0, "fp32": 1}
    assert report.partial_qdq == (f"the_conv: {lacks}",)
    assert report.fp32_convolutions == ("the_conv",)
    assert any(
        "'the_conv'" in w and f"not on its {lacks}" in w and "unquantised" in w
        for w in report.warnings
    )


def test_int8_file_without_int8_convolution_is_a_warning(tmp_path: Path) -> None:
    report = _report(conv_graph(tmp_path / "m.onnx", False, False), "int8")
    assert report.convolutions == {"int8": 0, "fp16": 0, "fp32": 1} and report.partial_qdq == ()
    assert report.warnings == ("m.onnx: no convolution has INT8 Q/DQ on input and weights",)
    assert _report(conv_graph(tmp_path / "f.onnx", False, False), "fp32").warnings == ()


def test_refused_operator_is_named_with_its_node(tmp_path: Path) -> None:
    path = conv_graph(tmp_path / "m.onnx", False, False, bad_op="Det")
    with pytest.raises(EngineBuildError) as info:
        _report(path)
    message = str(info.value)
    assert message.startswith(f"TensorRT-RTX cannot parse {path}: node 'refused_Det' (Det)")
    assert "UNSUPPORTED_NODE" in message and "\n" not in message


def test_report_round_trips_and_rejects_bad_records(tmp_path: Path) -> None:
    report = _report(conv_graph(tmp_path / "m.onnx", True, False))
    assert NetworkReport.from_dict(report.to_dict()) == report
    assert "1 conv (fp32 1)" in report.summary()
    with pytest.raises(ConfigError, match=r"^x\.json: missing key layer_types$"):
        NetworkReport.from_dict({"layer_count": 3}, "x.json")
    with pytest.raises(ConfigError, match=r"x.json: convolutions.int8 must be an integer, got str"):
        NetworkReport.from_dict({**report.to_dict(), "convolutions": {"int8": "2"}}, "x.json")
    with pytest.raises(ConfigError, match="convolution precisions"):
        NetworkReport(1, {"CONVOLUTION": 1}, {"int4": 1})
