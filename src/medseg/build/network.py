"""The part of an engine build both runtimes share: ONNX -> strongly typed network -> report.

TensorRT and TensorRT-RTX have the same ``Builder`` / ``OnnxParser`` / ``INetworkDefinition``
API, so the module object (``tensorrt`` or ``tensorrt_rtx``) is passed in and everything here
works with either: parsing (a refused node is named, with its operator), the check of the
network's I/O against the manifest, the one optimisation profile from the manifest's shape
ranges, and the network report (:class:`~medseg.bundle.network_report.NetworkReport`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

from medseg.bundle.entries import InputSpec
from medseg.bundle.manifest import Manifest
from medseg.bundle.network_report import NetworkReport
from medseg.errors import EngineBuildError

__all__ = ["add_profile", "check_io", "network_report", "parse_onnx", "profile_record"]

#: Layers that move or describe data rather than compute it: their FP32 outputs are not
#: "tensors that stay FP32" in the report.
_NOT_COMPUTE = ("CONSTANT", "QUANTIZE", "DEQUANTIZE", "CAST", "SHAPE", "ASSERTION", "IDENTITY")


def _parser_error(error: Any) -> str:
    """``node 'bad_Det' (Det): UNSUPPORTED_NODE: false`` from one ``IParserError``."""
    desc = " ".join(str(error.desc()).split())
    code = getattr(error.code(), "name", str(error.code()))
    name, op = str(error.node_name() or ""), str(error.node_operator() or "")
    where = f"node {name!r} ({op})" if name or op else f"node #{error.node()}"
    return f"{where}: {code}: {desc}"


def parse_onnx(trt: ModuleType, network: Any, logger: Any, onnx_path: Path, label: str) -> Any:
    """Parse ``onnx_path`` into ``network``; the parser is returned (keep it alive to the build).

    Raises:
        EngineBuildError: ``"<label> cannot parse FILE: node 'n' (Op): CODE: reason"``, one
            entry per refused node.
    """
    parser = trt.OnnxParser(network, logger)
    native = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)
    if native is not None:  # TensorRT's own InstanceNorm layer, needed by compatible builds
        parser.set_flag(native)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"{label} cannot parse {onnx_path}: {'; '.join(errors) or 'no parser error given'}"
        )
    return parser


def check_io(network: Any, manifest: Manifest, onnx_path: Path) -> None:
    """The network's one input and one output carry the manifest's names."""
    spec = manifest.input
    names = (
        [network.get_input(i).name for i in range(network.num_inputs)],
        [network.get_output(i).name for i in range(network.num_outputs)],
    )
    if names != ([spec.name], [manifest.output_name]):
        raise EngineBuildError(
            f"{onnx_path} has inputs/outputs {names[0]}/{names[1]}; the manifest says "
            f"[{spec.name!r}]/[{manifest.output_name!r}]: re-export the bundle"
        )


def add_profile(builder: Any, config: Any, spec: InputSpec) -> None:
    """One optimisation profile from the manifest's ranges: ``(N, C, H, W)``, or for a 3D
    input (``input.depth``, layout NCDHW) ``(N, C, D, H, W)`` min/opt/max.

    Driven by the manifest alone, so a static patch (only the batch dynamic) and a dynamic
    H x W build the same way; TensorRT and TensorRT-RTX share this code.
    """
    profile = builder.create_optimization_profile()
    axes = [spec.batch, spec.height, spec.width]
    if spec.depth is not None:
        axes.insert(1, spec.depth)
    shapes = []
    for k in ("min", "opt", "max"):
        sizes = [getattr(r, k) for r in axes]
        shapes.append((sizes[0], spec.channels, *sizes[1:]))
    profile.set_shape(spec.name, *shapes)
    config.add_optimization_profile(profile)


def profile_record(spec: InputSpec) -> dict[str, dict[str, int]]:
    """The sidecar's ``profile``: ``{"batch"|["depth"]|"height"|"width": {min, opt, max}}``."""
    axes = [("batch", spec.batch), ("height", spec.height), ("width", spec.width)]
    if spec.depth is not None:
        axes.insert(1, ("depth", spec.depth))
    return {axis: {"min": r.min, "opt": r.opt, "max": r.max} for axis, r in axes}


def network_report(trt: ModuleType, network: Any, precision: str, onnx_name: str) -> NetworkReport:
    """Walk a parsed network: layer types, convolution precisions, FP32 tensors, warnings.

    A convolution runs INT8 when both its input and its weights come from a DEQUANTIZE layer;
    the parser gives a convolution a weights input only when the weights are not a plain
    initializer (a one-input convolution carries FP32/FP16 weights in its kernel).
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer: dict[str, Any] = {}
    consumers: dict[str, list[Any]] = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
        for j in range(layer.num_inputs):
            tensor = layer.get_input(j)
            if tensor is not None:
                consumers.setdefault(tensor.name, []).append(layer)
    dequantize, quantize = trt.LayerType.DEQUANTIZE, trt.LayerType.QUANTIZE

    def from_dq(tensor: Any) -> bool:
        return tensor is not None and getattr(producer.get(tensor.name), "type", None) == dequantize

    convs: Counter[str] = Counter()
    partial, fp32_convs, warnings = [], [], []
    for layer in layers:
        if layer.type != trt.LayerType.CONVOLUTION:
            continue
        on_input = from_dq(layer.get_input(0))
        on_weights = layer.num_inputs > 1 and from_dq(layer.get_input(1))
        if on_input and on_weights:
            convs["int8"] += 1
            continue
        half = layer.get_output(0).dtype == trt.DataType.HALF
        convs["fp16" if half else "fp32"] += 1
        if precision != "fp32" and not half:
            fp32_convs.append(layer.name)
        if on_input != on_weights:
            lacks = "weights" if on_input else "input"
            partial.append(f"{layer.name}: {lacks}")
            warnings.append(
                f"{onnx_name}: convolution {layer.name!r} has INT8 Q/DQ on its "
                f"{'input' if on_input else 'weights'} but not on its {lacks}: TensorRT runs it "
                "unquantised (FP32)"
            )
    if precision == "int8" and not convs["int8"]:
        warnings.append(f"{onnx_name}: no convolution has INT8 Q/DQ on input and weights")
    fp32_tensors = []
    for layer in layers:
        if layer.type.name in _NOT_COMPUTE:
            continue
        for j in range(layer.num_outputs):
            out = layer.get_output(j)
            quantised = any(c.type == quantize for c in consumers.get(out.name, ()))
            if out.dtype == trt.DataType.FLOAT and not quantised:
                fp32_tensors.append(out.name)
    return NetworkReport(
        layer_count=len(layers),
        layer_types=dict(sorted(Counter(layer.type.name for layer in layers).items())),
        convolutions=dict(convs),
        partial_qdq=tuple(partial),
        fp32_convolutions=tuple(fp32_convs),
        fp32_tensors=tuple(fp32_tensors),
        warnings=tuple(warnings),
    )
