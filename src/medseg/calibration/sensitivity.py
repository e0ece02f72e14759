"""Which quantised layers cost the most accuracy: measured layer by layer, on real slices.

For every layer that got Q/DQ inputs in the INT8 model, the INT8 model is run with **that
one layer left in FP32** (leave-one-out), and the signal-to-noise ratio of its logits
against the FP32 model's is compared with the full INT8 model's: the gain in dB is what
excluding that layer from quantisation buys back, which is the question the export's
accuracy guard asks. Layers are ranked by that gain, largest first.

How it was chosen (measured on the trained MNI152 attention-fusion model, one brain, 79
quantised convolutions, 4 to 6 validation slices; full INT8 logits at 34 to 36 dB):

- The Polygraphy-style comparison of each layer's output in the INT8 and FP32 models, and
  the isolated SNR of each layer's own output (only it quantised, FP32 inputs), both rank
  1x1 shortcut convolutions deep in the encoder first; excluding those changes the logits
  by -0.15 to +0.1 dB. Neither sees how much of a layer's error reaches the output.
- Leave-one-out ranks first the layer whose real exclusion (re-quantising with
  ``nodes_to_exclude``) gains 2.8 dB, and its predicted gain matched the real one within
  0.2 dB for 15 of 16 layers checked (best and worst ranked included). The exception: for
  some convolutions modelopt also drops the Q/DQ of their fusion partners (a CBAM gate
  multiply) when they are excluded, which the emulation does not.

Cost: one ONNX Runtime session. Every quantised layer is wrapped in an ``If`` on a
selector input, so one pass is one forward pass of the INT8 network with one chosen layer in
FP32: ``(layers + 1) x samples`` passes, about 14 s per slice for the 79-layer small model
at 208x240 on one CPU core, 3 s in all for the tiny test model on 4 slices of 64x64. On
the trained model the top layer was the same with 2, 4 and 6 slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.calibration._onnx import (
    check_onnx_path,
    check_samples,
    first_line,
    input_spec,
    load_model,
    ort_session,
)
from medseg.calibration.int8 import quantized_nodes, unquantized_inputs
from medseg.config_io import json_ready
from medseg.errors import ConfigError, ExportError

if TYPE_CHECKING:
    import onnx

__all__ = ["LayerSensitivity", "layer_sensitivity"]

_SELECT = "__medseg_select"
_PREFIX = "__medseg_sensitivity"


@dataclass(frozen=True)
class LayerSensitivity:
    """What leaving one quantised layer in FP32 buys back.

    Attributes:
        node: node name (the same in the FP32 and INT8 models: modelopt keeps names).
        op_type: e.g. ``"Conv"``.
        snr_db: SNR in dB of the INT8 model's logits with this layer left in FP32, against
            the FP32 model (``10 log10(sum y^2 / sum (y_q - y)^2)`` over all samples).
        gain_db: ``snr_db`` minus the full INT8 model's SNR; larger means more sensitive.
        rank: 1 for the most sensitive layer (largest gain).
    """

    node: str
    op_type: str
    snr_db: float
    gain_db: float
    rank: int

    @property
    def int8_snr_db(self) -> float:
        """SNR of the full INT8 model's logits (the same for every layer)."""
        return self.snr_db - self.gain_db

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (an infinite SNR, for an exact result, becomes ``None``)."""
        return {
            "node": self.node,
            "op_type": self.op_type,
            "snr_db": _finite_or_none(self.snr_db),
            "gain_db": _finite_or_none(self.gain_db),
            "rank": self.rank,
        }


def layer_sensitivity(
    fp32_onnx: Path,
    int8_onnx: Path,
    samples: np.ndarray,
    *,
    max_samples: int | None = 4,
    threads: int = 0,
) -> tuple[LayerSensitivity, ...]:
    """Rank the quantised layers of ``int8_onnx`` by what leaving each in FP32 buys back.

    Args:
        fp32_onnx: the FP32 model the INT8 model was quantised from.
        int8_onnx: its Q/DQ model (:func:`~medseg.calibration.quantize_int8`).
        samples: ``(N, C, H, W)`` float32 slices, e.g. the calibration slices.
        max_samples: measure on at most this many of ``samples``, evenly spaced through
            them (calibration sets are in slice order: this spreads them along the depth);
            ``None``: all. The cost is ``samples x (layers + 1)`` forward passes.
        threads: ONNX Runtime intra-op threads (0: its default).

    Returns:
        One entry per quantised layer, most sensitive (largest SNR gain) first.

    Raises:
        ConfigError: a path that is not an existing ``.onnx``, ``max_samples < 1``.
        DatasetError: samples of the wrong shape or with NaN/Inf.
        ExportError: the INT8 model has no quantised layer or Q/DQ not in modelopt's form,
            the two models' outputs differ in shape, or a model does not run.
    """
    from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner

    fp32_onnx = check_onnx_path(fp32_onnx, "FP32 model")
    int8_onnx = check_onnx_path(int8_onnx, "INT8 model")
    fp32, int8 = load_model(fp32_onnx), load_model(int8_onnx)
    spec = input_spec(fp32, fp32_onnx)
    data = check_samples(samples, spec, "sensitivity samples")
    if max_samples is not None:
        if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
            raise ConfigError(
                f"max_samples must be a positive integer or None, got {max_samples!r}"
            )
        if len(data) > max_samples:
            data = data[np.linspace(0, len(data) - 1, max_samples).round().astype(int)]
    layers = quantized_nodes(int8)
    if not layers:
        raise ExportError(f"{int8_onnx} has no quantised layer (no Conv with Q/DQ inputs)")
    op_types = {node.name: node.op_type for node in int8.graph.node}
    logits = int8.graph.output[0].name

    noise = np.zeros(len(layers) + 1)  # per excluded layer; the last: nothing excluded
    signal = 0.0
    try:
        reference_runner = OnnxRuntimeRunner(ort_session(fp32_onnx, threads))
        first = reference_runner.output_names[0]
        runner = OnnxRuntimeRunner(
            ort_session(_selectable_model(int8, layers).SerializeToString(), threads)
        )
        for sample in data:
            reference = reference_runner.infer({spec.name: sample[None]}, [first])[first]
            reference = reference.astype(np.float64)
            signal += float(np.sum(reference**2))
            for k in [*range(len(layers)), -1]:
                feed = {spec.name: sample[None], _SELECT: np.array(k, dtype=np.int64)}
                out = runner.infer(feed, [logits])[logits]
                if out.shape != reference.shape:
                    raise ExportError(
                        f"{int8_onnx} gives logits {out.shape} where {fp32_onnx} gives "
                        f"{reference.shape}; accepted: an INT8 model quantised from this model"
                    )
                noise[k] += float(np.sum((out - reference) ** 2))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(
            f"layer-wise comparison of {int8_onnx} with {fp32_onnx} failed: {first_line(exc)}"
        ) from exc

    base = _snr_db(signal, noise[-1])
    snr = [_snr_db(signal, noise[k]) for k in range(len(layers))]
    order = sorted(range(len(layers)), key=lambda k: (-snr[k], k))
    return tuple(
        LayerSensitivity(
            node=layers[k],
            op_type=op_types[layers[k]],
            snr_db=snr[k],
            gain_db=snr[k] - base,
            rank=rank,
        )
        for rank, k in enumerate(order, start=1)
    )


def _selectable_model(int8: onnx.ModelProto, layers: list[str]) -> onnx.ModelProto:
    """The INT8 model with a scalar int64 input ``select``: layer ``select`` runs in FP32.

    Each quantised layer becomes ``If(select == k)``: the *then* branch runs a copy of the
    layer on the tensors its QuantizeLinear nodes read (the FP32 values: the layer is
    excluded from quantisation), the *else* branch on its DequantizeLinear outputs (as in
    the INT8 model). Both branches read the outer graph's tensors and the ``If`` keeps the
    layer's output name, so nothing downstream changes.
    """
    import onnx  # available: the public function loaded the models with it

    helper = onnx.helper
    model = onnx.ModelProto()
    model.CopyFrom(int8)
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    index = {name: k for k, name in enumerate(layers)}
    graph.input.append(helper.make_tensor_value_info(_SELECT, onnx.TensorProto.INT64, []))

    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        k = index.get(node.name)
        if k is None:
            nodes.append(node)
            continue
        prefix = f"{_PREFIX}_{k}"
        branches = []
        for branch, inputs in (
            ("then", unquantized_inputs(node, producer)),
            ("else", list(node.input)),
        ):
            layer = helper.make_node(
                node.op_type, inputs, [f"{prefix}_{branch}"], name=f"{prefix}_{branch}"
            )
            layer.attribute.extend(node.attribute)
            output = helper.make_tensor_value_info(
                f"{prefix}_{branch}", onnx.TensorProto.FLOAT, None
            )
            branches.append(helper.make_graph([layer], f"{prefix}_{branch}_graph", [], [output]))
        graph.initializer.append(
            onnx.numpy_helper.from_array(np.array(k, dtype=np.int64), f"{prefix}_k")
        )
        nodes.append(helper.make_node("Equal", [_SELECT, f"{prefix}_k"], [f"{prefix}_cond"]))
        nodes.append(
            helper.make_node(
                "If",
                [f"{prefix}_cond"],
                [node.output[0]],
                name=f"{prefix}_if",
                then_branch=branches[0],
                else_branch=branches[1],
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _snr_db(signal: float, noise: float) -> float:
    if noise <= 0.0:
        return math.inf
    if signal <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _finite_or_none(value: float) -> float | None:
    result: float | None = json_ready(round(value, 3) if math.isfinite(value) else value)
    return result
