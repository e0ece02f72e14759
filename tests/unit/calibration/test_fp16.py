"""FP16 with modelopt AutoCast on the tiny attention-fusion network (real modelopt and ORT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from calib_testutils import SIZE, run

from medseg.calibration import FP16_KEEP_FP32_OP_TYPES, convert_fp16, convert_precision
from medseg.errors import ConfigError, ExportError

F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def _types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    return {
        info.name: info.type.tensor_type.elem_type
        for info in (*graph.input, *graph.output, *graph.value_info)
    }


def test_fp16_weights_fp32_io_kept_ops_fp32_and_argmax_agrees(
    tiny_onnx: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.fp16.onnx"
    result = convert_fp16(tiny_onnx, out)
    assert capfd.readouterr() == ("", "")  # modelopt's logs stay off the terminal
    assert result.output == out and out.is_file()
    assert result.keep_fp32_op_types == FP16_KEEP_FP32_OP_TYPES
    assert [p.name for p in tmp_path.iterdir()] == ["model.fp16.onnx"]

    model = onnx.load(str(out))
    assert any(init.data_type == F16 for init in model.graph.initializer)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [F32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [F32]
    types = _types(model)
    means = [n for n in model.graph.node if n.op_type == "ReduceMean"]
    assert means, "the attention-fusion net has CBAM/SE global means"
    assert all(types[n.output[0]] == F32 for n in means)
    assert {n.name for n in means} <= set(result.fp32_nodes)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(types[n.output[0]] == F16 for n in convs)
    assert result.fp16_nodes >= len(convs) and result.cast_nodes > 0
    assert result.to_manifest()["keep_fp32_op_types"] == list(FP16_KEEP_FP32_OP_TYPES)

    # another batch size than the export's (2): the batch stays dynamic
    x = np.random.default_rng(1).standard_normal((3, 1, SIZE, SIZE)).astype(np.float32)
    fp32, fp16 = run(tiny_onnx, x), run(out, x)
    assert fp16.dtype == np.float32 and fp16.shape == fp32.shape == (3, 4, SIZE, SIZE)
    assert (fp16.argmax(1) == fp32.argmax(1)).mean() > 0.99


def test_reference_inputs_drive_the_range_check(
    tiny_onnx: Path, calibration: np.ndarray, tmp_path: Path
) -> None:
    result = convert_precision(tiny_onnx, tmp_path / "m.fp16.onnx", "fp16", calibration=calibration)
    assert result.output.is_file()
    bad = calibration[:2].copy()
    bad[1, 0, 3, 3] = np.inf
    with pytest.raises(Exception, match="sample 1 contains NaN or Inf"):
        convert_fp16(tiny_onnx, tmp_path / "x.fp16.onnx", reference_inputs=bad)


def test_unknown_op_type_is_a_config_error(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'Reducemean'"):
        convert_fp16(tiny_onnx, tmp_path / "m.onnx", ("Reducemean",))


def test_a_broken_input_is_an_export_error_and_writes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    with pytest.raises(ExportError, match=r"broken\.onnx"):
        convert_fp16(broken, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.onnx"]
