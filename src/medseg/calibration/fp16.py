"""FP16: mixed-precision ONNX with nvidia-modelopt AutoCast.

TensorRT builds strongly typed networks, so the FP16 engine is whatever the ONNX file says:
this module writes ``model.fp16.onnx`` with FP16 weights and activations, FP32 graph
inputs and outputs (``keep_io_types``), and FP32 islands (with Cast nodes around them) for
the op types in :data:`FP16_KEEP_FP32_OP_TYPES` and for any node AutoCast's own range rule
flags (inputs or outputs beyond +-512 on the reference inputs, where FP16 keeps less than
one decimal of fraction).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.atomic import atomic_file, check_parent_exists
from medseg.calibration._onnx import (
    check_onnx_path,
    check_samples,
    copy_metadata,
    first_line,
    float_types,
    input_spec,
    load_model,
    modelopt_quiet,
    run_model,
)
from medseg.deps import require
from medseg.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

__all__ = ["FP16_KEEP_FP32_OP_TYPES", "MAX_REFERENCE_INPUTS", "Fp16Result", "convert_fp16"]

#: Op types that stay FP32 in the FP16 model. Our exported networks contain ``ReduceMean``
#: (CBAM channel and spatial attention, squeeze-excitation in the attention-fusion net);
#: the others are kept for architectures added later (MONAI nets, softmax heads).
#: ``ReduceMax``, ``Sigmoid``, ``Resize``, ``MaxPool`` and the convolutions are safe in FP16
#: (exact, bounded or well-conditioned) and are converted.
FP16_KEEP_FP32_OP_TYPES: tuple[str, ...] = (
    # Means and sums over a whole feature map (65,536 values at 256x256): accumulated in
    # FP16 the running sum passes 65,504 (FP16's largest value) or drops the low bits of
    # every addend once it is large (spacing 32 at 65,536).
    "ReduceMean",
    "ReduceSum",
    "GlobalAveragePool",
    # Sums of squares: squares overflow FP16 from |x| > 256.
    "ReduceSumSquare",
    "ReduceL2",
    "Pow",
    # exp overflows FP16 from x > 11.1; softmax normalises by a sum of exps.
    "Exp",
    "Softmax",
    "LogSoftmax",
)


#: AutoCast's range check runs on at most this many reference inputs.
MAX_REFERENCE_INPUTS = 8


@dataclass(frozen=True)
class Fp16Result:
    """What :func:`convert_fp16` wrote.

    Attributes:
        output: path of the FP16 ONNX file.
        keep_fp32_op_types: op types asked to stay FP32.
        fp32_nodes: compute nodes left in FP32 (kept op types, plus any node AutoCast's
            range rule kept), in graph order.
        fp16_nodes: number of compute nodes converted to FP16.
        cast_nodes: number of Cast nodes in the output (graph I/O and FP32 islands).
    """

    output: Path
    keep_fp32_op_types: tuple[str, ...]
    fp32_nodes: tuple[str, ...]
    fp16_nodes: int
    cast_nodes: int

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready summary for the bundle manifest."""
        return {
            "tool": "nvidia-modelopt AutoCast",
            "keep_fp32_op_types": list(self.keep_fp32_op_types),
            "fp32_nodes": list(self.fp32_nodes),
            "fp16_nodes": self.fp16_nodes,
            "cast_nodes": self.cast_nodes,
        }


def convert_fp16(
    onnx_in: Path,
    onnx_out: Path,
    keep_fp32_op_types: Sequence[str] = FP16_KEEP_FP32_OP_TYPES,
    *,
    reference_inputs: np.ndarray | None = None,
    verbose: bool = False,
) -> Fp16Result:
    """Convert an FP32 ONNX model to FP16 with FP32 I/O, written atomically to ``onnx_out``.

    Args:
        onnx_in: the FP32 model (one ``(B, C, H, W)`` input).
        onnx_out: where to write the FP16 model (``.onnx``); replaced only on success.
        keep_fp32_op_types: ONNX op types to leave in FP32.
        reference_inputs: ``(N, C, H, W)`` float32 slices (e.g. the calibration slices) on
            which AutoCast checks value ranges (at most :data:`MAX_REFERENCE_INPUTS`,
            evenly spaced: AutoCast holds every intermediate tensor of every one in memory)
            and the result is run in ONNX Runtime. ``None``: one random batch in
            ``[-1, 1)`` at the model's fixed input size (a model with dynamic ``H, W`` then
            needs reference inputs).
        verbose: let modelopt print its logs.

    Returns:
        Which nodes stayed FP32 and how many were converted.

    Raises:
        ConfigError: unknown op types, input not an existing ``.onnx``, dynamic ``H, W``
            without reference inputs.
        DatasetError: reference inputs of the wrong shape or with NaN/Inf.
        ExportError: AutoCast failed, or its output does not run in ONNX Runtime or gives
            non-finite values.
    """
    onnx = require("onnx", "FP16 conversion")
    onnx_in = check_onnx_path(onnx_in, "FP32 model")
    onnx_out = Path(onnx_out)
    check_parent_exists(onnx_out)
    kept = _check_op_types(keep_fp32_op_types)
    model = load_model(onnx_in)
    spec = input_spec(model, onnx_in)
    if reference_inputs is None:
        if spec.spatial_dynamic:
            raise ConfigError(
                f"{onnx_in} has input {spec.name!r} with dynamic size {spec.dims}; pass "
                "reference_inputs (N, C, H, W) for AutoCast's range check"
            )
        shape = (1, *(d or 1 for d in spec.dims[1:]))
        probe = np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype(np.float32)
    else:
        probe = check_samples(reference_inputs, spec, "FP16 reference inputs")
        if len(probe) > MAX_REFERENCE_INPUTS:
            picks = np.linspace(0, len(probe) - 1, MAX_REFERENCE_INPUTS).round().astype(int)
            probe = probe[picks]
    autocast = require("modelopt.onnx.autocast", "FP16 conversion")

    with tempfile.TemporaryDirectory(prefix="medseg-fp16-") as tmp:
        calibration_data = None
        if reference_inputs is not None:
            calibration_data = str(Path(tmp) / "reference.npz")
            arrays: dict[str, Any] = {spec.name: probe}
            np.savez(calibration_data, **arrays)
        try:
            with modelopt_quiet(verbose):
                converted = autocast.convert_to_mixed_precision(
                    onnx_path=str(onnx_in),
                    low_precision_type="fp16",
                    op_types_to_exclude=list(kept),
                    keep_io_types=True,
                    calibration_data=calibration_data,
                    providers=["cpu"],
                )
        except Exception as exc:
            raise ExportError(
                f"AutoCast FP16 conversion of {onnx_in} failed: {first_line(exc)}"
            ) from exc

    _clear_unknown_dims(converted)
    copy_metadata(model, converted)
    fp32_nodes, fp16_count, casts = _classify(converted)
    with atomic_file(onnx_out) as tmp_out:
        onnx.save(converted, str(tmp_out))
        run_model(tmp_out, probe[:2], f"FP16 model converted from {onnx_in}")
    return Fp16Result(onnx_out, kept, tuple(fp32_nodes), fp16_count, casts)


def _check_op_types(op_types: Sequence[str]) -> tuple[str, ...]:
    onnx = require("onnx", "FP16 conversion")
    if isinstance(op_types, str):
        raise ConfigError(f"keep_fp32_op_types must be a sequence of op types, got {op_types!r}")
    unknown = [t for t in op_types if not (isinstance(t, str) and onnx.defs.has(t))]
    if unknown:
        raise ConfigError(
            f"unknown ONNX op type(s) {unknown} in keep_fp32_op_types; accepted: ONNX operator "
            f"names such as {', '.join(FP16_KEEP_FP32_OP_TYPES[:4])}"
        )
    return tuple(dict.fromkeys(op_types))


def _clear_unknown_dims(model: onnx.ModelProto) -> None:
    """Drop the ``"unk"`` dim_param AutoCast leaves where shape inference gave up.

    modelopt 0.47 marks every dimension it could not re-infer (e.g. after a Resize whose
    size is computed) with the same symbol ``"unk"``; ONNX Runtime then treats all those
    dimensions as equal and fails ("Shape mismatch attempting to re-use buffer").
    """
    graph = model.graph
    for info in (*graph.value_info, *graph.output):
        for dim in info.type.tensor_type.shape.dim:
            if dim.dim_param == "unk":
                dim.ClearField("dim_param")


def _classify(model: onnx.ModelProto) -> tuple[list[str], int, int]:
    """FP32 compute nodes (names), the number of FP16 ones, and the number of Casts."""
    onnx = require("onnx", "FP16 conversion")
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    types = float_types(model)
    fp32: list[str] = []
    fp16 = casts = 0
    for node in model.graph.node:
        if node.op_type == "Cast":
            casts += 1
            continue
        out_types = {types.get(name) for name in node.output if name}
        if f16 in out_types:
            fp16 += 1
        elif f32 in out_types:
            fp32.append(node.name)
    return fp32, fp16, casts
