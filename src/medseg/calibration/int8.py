"""INT8: explicit Q/DQ post-training quantisation with nvidia-modelopt.

TensorRT 11 dropped its INT8 calibrators; an INT8 engine comes from an ONNX file that
carries QuantizeLinear/DequantizeLinear pairs with the calibrated scales. modelopt places
them the way TensorRT fuses them: on the data and weight inputs of convolutions (weights
per output channel), and on the outputs that feed a following quantised layer. The same
file runs in ONNX Runtime on CPU with the exact INT8 rounding, which is how CI measures
the INT8 accuracy without a GPU.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.atomic import atomic_file, check_parent_exists
from medseg.calibration._onnx import (
    check_onnx_path,
    check_samples,
    copy_metadata,
    first_line,
    input_spec,
    load_model,
    modelopt_quiet,
    run_model,
)
from medseg.deps import require
from medseg.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

__all__ = [
    "QUANTIZABLE_OP_TYPES",
    "CalibrationMethod",
    "Int8Config",
    "Int8Result",
    "quantize_int8",
    "quantized_nodes",
    "unquantized_inputs",
]

#: Weighted op types whose quantisation :class:`Int8Result` reports.
QUANTIZABLE_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class CalibrationMethod(str, Enum):
    """How activation ranges are chosen from the calibration data.

    ``max``: the largest absolute value seen (no clipping; robust for few slices).
    ``entropy``: the clipping threshold that minimises the KL divergence between the FP32
    and INT8 histograms (TensorRT's classic method; clips rare outliers).
    """

    MAX = "max"
    ENTROPY = "entropy"


@dataclass(frozen=True)
class Int8Config:
    """Options of :func:`quantize_int8`.

    Attributes:
        method: activation range calibration.
        nodes_to_exclude: exact node names to leave in FP32 (no Q/DQ), e.g. the most
            sensitive layers from :func:`~medseg.calibration.layer_sensitivity`.
    """

    method: CalibrationMethod = CalibrationMethod.MAX
    nodes_to_exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            method = CalibrationMethod(self.method)
        except ValueError:
            accepted = ", ".join(m.value for m in CalibrationMethod)
            raise ConfigError(
                f"unknown calibration method {self.method!r}; accepted: {accepted}"
            ) from None
        object.__setattr__(self, "method", method)
        names = self.nodes_to_exclude
        if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(f"nodes_to_exclude must be a sequence of node names, got {names!r}")
        object.__setattr__(self, "nodes_to_exclude", tuple(dict.fromkeys(names)))


@dataclass(frozen=True)
class Int8Result:
    """What :func:`quantize_int8` wrote.

    Attributes:
        output: path of the INT8 (Q/DQ) ONNX file.
        quantized_nodes: weighted nodes (:data:`QUANTIZABLE_OP_TYPES`) whose data and
            weight inputs both come through DequantizeLinear, in graph order.
        excluded_nodes: nodes left in FP32 because they were asked to be.
        skipped_nodes: weighted nodes modelopt itself left in FP32 (e.g. convolutions with
            fewer than 16 input or output channels that TensorRT runs faster in FP16/FP32).
        method: the calibration method used.
        num_calibration_slices: number of calibration samples.
    """

    output: Path
    quantized_nodes: tuple[str, ...]
    excluded_nodes: tuple[str, ...]
    skipped_nodes: tuple[str, ...]
    method: CalibrationMethod
    num_calibration_slices: int

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready summary for the bundle manifest."""
        return {
            "tool": "nvidia-modelopt ONNX PTQ (explicit Q/DQ)",
            "calibration_method": self.method.value,
            "num_calibration_slices": self.num_calibration_slices,
            "quantized_nodes": len(self.quantized_nodes),
            "excluded_nodes": list(self.excluded_nodes),
            "skipped_nodes": list(self.skipped_nodes),
            "high_precision": "fp32",
        }


def quantize_int8(
    onnx_in: Path,
    onnx_out: Path,
    calibration: np.ndarray,
    config: Int8Config | None = None,
    *,
    verbose: bool = False,
) -> Int8Result:
    """Insert calibrated Q/DQ pairs into an FP32 model and write it atomically to ``onnx_out``.

    The part of the network that is not quantised stays FP32 (modelopt's
    ``high_precision_dtype="fp32"``; modelopt's default, ``"fp16"``, would also convert
    every other tensor to FP16). Keeping FP32 means: the CPU accuracy check measures the
    INT8 error alone, exactly as TensorRT will compute the Q/DQ layers; the layers excluded
    for accuracy really run in FP32 in a strongly typed TensorRT engine; and the
    reductions that :mod:`medseg.calibration.fp16` keeps in FP32 stay there. The cost is
    that non-quantised elementwise layers run in FP32 rather than FP16 on the GPU.

    Args:
        onnx_in: the FP32 model (one ``(B, C, H, W)`` input).
        onnx_out: where to write the INT8 model (``.onnx``); replaced only on success.
        calibration: ``(N, C, H, W)`` float32 calibration slices (see
            :func:`~medseg.calibration.select_calibration_slices`); run one at a time.
        config: calibration method and nodes to exclude (default :class:`Int8Config`).
        verbose: let modelopt print its logs.

    Returns:
        Which nodes were quantised, excluded, or skipped by modelopt.

    Raises:
        ConfigError: input not an existing ``.onnx``, or a node to exclude that the model
            does not have.
        DatasetError: calibration data of the wrong shape or with NaN/Inf.
        ExportError: modelopt failed, quantised no layer, or the output does not run in
            ONNX Runtime or gives non-finite values.
    """
    config = config or Int8Config()
    onnx_in = check_onnx_path(onnx_in, "FP32 model")
    onnx_out = Path(onnx_out)
    check_parent_exists(onnx_out)
    model = load_model(onnx_in)
    spec = input_spec(model, onnx_in)
    data = check_samples(calibration, spec, "INT8 calibration data")
    _check_node_names(model, config.nodes_to_exclude, onnx_in)
    onnx = require("onnx", "INT8 quantisation")
    quantization = require("modelopt.onnx.quantization", "INT8 quantisation")

    # modelopt writes intermediate files (opset-upgraded copies, ...) next to its input and
    # output: run it in a private folder beside the output, then move the result into place.
    with tempfile.TemporaryDirectory(prefix=".medseg-int8-", dir=onnx_out.absolute().parent) as tmp:
        work_in, work_out = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        onnx.save(model, str(work_in))
        try:
            with modelopt_quiet(verbose) as log_level:
                quantization.quantize(
                    str(work_in),
                    quantize_mode="int8",
                    calibration_data={spec.name: data},
                    calibration_method=config.method.value,
                    calibration_eps=["cpu"],
                    # modelopt matches these with re.match (a prefix match): anchor them.
                    nodes_to_exclude=[re.escape(n) + r"\Z" for n in config.nodes_to_exclude],
                    high_precision_dtype="fp32",
                    output_path=str(work_out),
                    log_level=log_level,
                )
        except Exception as exc:
            raise ExportError(
                f"modelopt INT8 quantisation of {onnx_in} failed: {first_line(exc)}"
            ) from exc
        if not work_out.is_file():
            raise ExportError(f"modelopt INT8 quantisation of {onnx_in} wrote no output")
        quantized = load_model(work_out)
        copy_metadata(model, quantized)
        _unquantize(quantized, config.nodes_to_exclude)
        done = quantized_nodes(quantized)
        if not done:
            raise ExportError(
                f"modelopt quantised no layer of {onnx_in}: no Conv got Q/DQ inputs "
                f"(excluded: {list(config.nodes_to_exclude)})"
            )
        weighted = [n.name for n in quantized.graph.node if n.op_type in QUANTIZABLE_OP_TYPES]
        excluded = set(config.nodes_to_exclude)
        skipped = tuple(n for n in weighted if n not in done and n not in excluded)
        with atomic_file(onnx_out) as tmp_out:
            onnx.save(quantized, str(tmp_out))
            run_model(tmp_out, data[:2], f"INT8 model quantised from {onnx_in}")
    return Int8Result(
        output=onnx_out,
        quantized_nodes=tuple(done),
        excluded_nodes=config.nodes_to_exclude,
        skipped_nodes=skipped,
        method=config.method,
        num_calibration_slices=int(data.shape[0]),
    )


def quantized_nodes(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes whose data and weight inputs both come from DequantizeLinear."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def dequantized(name: str) -> bool:
        node = producer.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTIZABLE_OP_TYPES
        and len(node.input) >= 2
        and dequantized(node.input[0])
        and dequantized(node.input[1])
    ]


def unquantized_inputs(node: onnx.NodeProto, producer: Mapping[str, onnx.NodeProto]) -> list[str]:
    """``node``'s inputs with each ``DequantizeLinear(QuantizeLinear(x))`` replaced by ``x``.

    Raises:
        ExportError: an input dequantised from something else than a QuantizeLinear.
    """
    inputs = []
    for i, tensor in enumerate(node.input):
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            inputs.append(tensor)
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            raise ExportError(
                f"input {i} of node {node.name} is dequantised from {dq.input[0]!r}, not "
                "from a QuantizeLinear; accepted: modelopt's Q/DQ pairs"
            )
        inputs.append(q.input[0])
    return inputs


def _unquantize(model: onnx.ModelProto, names: tuple[str, ...]) -> None:
    """Feed excluded nodes their FP32 inputs.

    modelopt (through ONNX Runtime's quantiser) quantises a tensor once and wires *every*
    consumer to the DequantizeLinear output: an excluded convolution that shares its input
    with a quantised one (the first encoder convolution and its shortcut both read the
    image) keeps an INT8 activation and loses only its weight quantisation.
    """
    excluded = set(names)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
        if node.name in excluded:
            inputs = unquantized_inputs(node, producer)
            del node.input[:]
            node.input.extend(inputs)
    orphans: set[str] = set()
    while True:  # drop Q/DQ pairs nothing reads any more, and their scales
        used = {name for node in graph.node for name in node.input}
        used |= {output.name for output in graph.output}
        dead = [
            node
            for node in graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not any(out in used for out in node.output)
        ]
        if not dead:
            break
        for node in dead:
            orphans.update(node.input[1:])
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name in orphans - used]:
        graph.initializer.remove(init)


def _check_node_names(model: onnx.ModelProto, names: tuple[str, ...], path: Path) -> None:
    present: Mapping[str, str] = {node.name: node.op_type for node in model.graph.node}
    unknown = [n for n in names if n not in present]
    if unknown:
        examples = [n for n, op in present.items() if op in QUANTIZABLE_OP_TYPES][:3]
        raise ConfigError(
            f"nodes_to_exclude {unknown} are not nodes of {path}; accepted: node names of "
            f"the model, e.g. {examples}"
        )
