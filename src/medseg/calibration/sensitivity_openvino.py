"""Per-layer INT8 sensitivity measured on OpenVINO: what leaving one layer in FP32 buys back.

OpenVINO does not run the Q/DQ file the way ONNX Runtime does: its low-precision
transformations move dequantisation through Concat, Reduce, pooling and elementwise ops and
run them in 8 bits, so the layers that cost accuracy there are not the ones ONNX Runtime's
ranking (:func:`medseg.calibration.layer_sensitivity`) finds. The ``If``-based emulation of
that function does not carry over (OpenVINO would not quantise inside ``If`` bodies), so
here each variant is a real file: the INT8 model with one quantised layer reading its
unquantised inputs, compiled by OpenVINO (INFERENCE_PRECISION_HINT=f32 for what is not
quantised) and compared with the FP32 model on OpenVINO f32 by the SNR of the logits.

Measured on the committed MNI152 demo bundle (79 quantised convolutions, 4 calibration
slices, one thread): the full INT8 logits are at 9.2 dB on OpenVINO (ONNX Runtime: ~35 dB);
the two convolutions that read the decoder's concatenation ``node_cat_11`` (``node_Conv_640``
3x3 and ``node_Conv_644`` 1x1) each gain +16.8 dB in FP32, the next +0.4 dB. About 4 s per
layer there; under a second for the tiny test model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from medseg.calibration._onnx import check_onnx_path, check_samples, input_spec, load_model
from medseg.calibration.int8 import quantized_nodes, unquantized_inputs
from medseg.calibration.sensitivity import LayerSensitivity, _snr_db
from medseg.errors import ExportError

__all__ = ["layer_sensitivity_openvino"]


def layer_sensitivity_openvino(
    fp32_onnx: Path, int8_onnx: Path, samples: np.ndarray, *, max_samples: int = 4
) -> tuple[LayerSensitivity, ...]:
    """Rank the quantised layers of ``int8_onnx`` by the SNR OpenVINO gains with each in FP32.

    Arguments and result as :func:`medseg.calibration.layer_sensitivity` (most sensitive
    first); ``samples`` are ``(N, C, H, W)`` float32, at most ``max_samples`` are used.
    """
    import onnx

    from medseg.runtime.backends.openvino import OpenVinoRunner
    from medseg.runtime.backends.session import run_batches

    fp32_onnx = check_onnx_path(fp32_onnx, "FP32 model")
    int8_onnx = check_onnx_path(int8_onnx, "INT8 model")
    int8 = load_model(int8_onnx)
    data = check_samples(samples, input_spec(load_model(fp32_onnx), fp32_onnx), "samples")
    if len(data) > max_samples:
        data = data[np.linspace(0, len(data) - 1, max_samples).round().astype(int)]
    layers = quantized_nodes(int8)
    if not layers:
        raise ExportError(f"{int8_onnx} has no quantised layer (no Conv with Q/DQ inputs)")
    producer = {out: node for node in int8.graph.node for out in node.output}
    op_types = {node.name: node.op_type for node in int8.graph.node}

    reference = run_batches(OpenVinoRunner(fp32_onnx), data, 1).astype(np.float64)
    signal = float(np.sum(reference**2))

    def noise(path: Path) -> float:
        out = run_batches(OpenVinoRunner(path), data, 1)
        return float(np.sum((out - reference) ** 2))

    base = _snr_db(signal, noise(int8_onnx))
    snr = []
    with tempfile.TemporaryDirectory(prefix="medseg-ov-sens-") as work:
        variant_path = Path(work) / "variant.onnx"
        for name in layers:
            variant = onnx.ModelProto()
            variant.CopyFrom(int8)
            node = next(n for n in variant.graph.node if n.name == name)
            inputs = unquantized_inputs(node, producer)
            del node.input[:]
            node.input.extend(inputs)
            onnx.save(variant, str(variant_path))
            snr.append(_snr_db(signal, noise(variant_path)))
    order = sorted(range(len(layers)), key=lambda k: (-snr[k], k))
    return tuple(
        LayerSensitivity(layers[k], op_types[layers[k]], snr[k], snr[k] - base, rank)
        for rank, k in enumerate(order, start=1)
    )
