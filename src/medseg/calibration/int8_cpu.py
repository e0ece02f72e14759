"""INT8 for CPUs: ONNX Runtime's own QDQ form, a separate file next to the TensorRT one.

The TensorRT file (:mod:`medseg.calibration.int8`, modelopt) puts Q/DQ on convolution
*inputs* only, the way TensorRT fuses them. ONNX Runtime's CPU provider fuses a convolution
into an integer kernel (``QLinearConv``) only when its output is quantised too
(``DQ -> Conv -> Q``): on the committed demo bundle it fuses 9 of 88 convolutions of
``model.int8.onnx``, keeps Q/DQ round trips around the other 79 and runs slower than FP32.

This module writes ``model.int8.cpu.onnx`` with ``onnxruntime.quantization.quantize_static``
in :attr:`QuantFormat.QDQ`, weights signed 8-bit per output channel, calibrated (min/max) on
the same calibration slices as the TensorRT file. Every convolution then runs as
``QLinearConv``, and the element-wise ops between them as ``QLinearAdd`` / ``QLinearMul`` /
``QLinearSigmoid``. TensorRT keeps receiving modelopt's file unchanged.

The activation/weight format (:class:`CpuInt8Format`) decides whether the file holds on
every CPU class: ONNX Runtime's x86 u8 x s8 kernels without VNNI (AVX2, AVX-512 without
VNNI) multiply with ``vpmaddubsw``, whose pairwise 16-bit sums saturate when both
activations and weights use their full range; its quantisation docs name the two ways out,
``reduce_range`` (7-bit weights) and the S8S8 format. Measured on the demo bundle
(docs/notes/i24.md), the default is the one that holds on AVX2 at no loss on VNNI/AMX.
"""

from __future__ import annotations

import enum
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_file, check_parent_exists
from medseg.calibration._onnx import (
    check_onnx_path,
    check_samples,
    copy_metadata,
    input_spec,
    load_model,
    run_model,
)
from medseg.deps import require
from medseg.errors import ConfigError, ExportError

__all__ = [
    "CPU_INT8_TOOL",
    "DEFAULT_CPU_INT8_FORMAT",
    "CpuInt8Format",
    "CpuInt8Result",
    "ort_conv_fusion",
    "quantize_int8_cpu",
]


class CpuInt8Format(str, enum.Enum):
    """Activation x weight types of the CPU INT8 file (ONNX Runtime ``QuantType`` names).

    ``u8s8``: activations QUInt8, weights QInt8 (full range: saturates without VNNI);
    ``u8s8-reduced``: the same with ``reduce_range`` (weights 7-bit: no saturation);
    ``s8s8``: activations and weights QInt8.
    """

    U8S8 = "u8s8"
    U8S8_REDUCED = "u8s8-reduced"
    S8S8 = "s8s8"

    @property
    def describe(self) -> str:
        activations = "QInt8" if self is CpuInt8Format.S8S8 else "QUInt8"
        reduced = ", reduce_range" if self is CpuInt8Format.U8S8_REDUCED else ""
        return (
            "onnxruntime.quantization.quantize_static (QDQ, activations "
            f"{activations}, weights QInt8 per channel{reduced}, MinMax)"
        )


#: The format that holds on every CPU class (measured: docs/notes/i24.md).
DEFAULT_CPU_INT8_FORMAT = CpuInt8Format.U8S8_REDUCED
CPU_INT8_TOOL = DEFAULT_CPU_INT8_FORMAT.describe


@dataclass(frozen=True)
class CpuInt8Result:
    """What :func:`quantize_int8_cpu` wrote.

    Attributes:
        output: path of the CPU INT8 ONNX file.
        excluded_nodes: nodes left in FP32 because they were asked to be.
        num_calibration_slices: number of calibration samples.
        integer_convs: convolutions ONNX Runtime's CPU provider runs as ``QLinearConv``
            after its graph optimisations.
        total_convs: convolutions of the FP32 model.
        format: the :class:`CpuInt8Format` written.
    """

    output: Path
    excluded_nodes: tuple[str, ...]
    num_calibration_slices: int
    integer_convs: int
    total_convs: int
    format: CpuInt8Format = DEFAULT_CPU_INT8_FORMAT

    def to_manifest(self) -> dict[str, Any]:
        """JSON-ready summary for the bundle manifest."""
        return {
            "tool": self.format.describe,
            "format": self.format.value,
            "num_calibration_slices": self.num_calibration_slices,
            "excluded_nodes": list(self.excluded_nodes),
            "ort_integer_convs": self.integer_convs,
            "total_convs": self.total_convs,
        }


def quantize_int8_cpu(
    onnx_in: Path,
    onnx_out: Path,
    calibration: np.ndarray,
    nodes_to_exclude: tuple[str, ...] = (),
    fmt: CpuInt8Format | str = DEFAULT_CPU_INT8_FORMAT,
) -> CpuInt8Result:
    """Quantise an FP32 model to ONNX Runtime's QDQ INT8 form, written atomically.

    Args:
        onnx_in: the FP32 model (one ``(B, C, H, W)`` input).
        onnx_out: where to write the CPU INT8 model; replaced only on success.
        calibration: ``(N, C, H, W)`` float32 calibration slices (the bundle's
            ``calibration.npz`` images), fed one at a time.
        nodes_to_exclude: exact node names of ``onnx_in`` to leave in FP32.
        fmt: the :class:`CpuInt8Format` (default: the one that holds without VNNI).

    Returns:
        The file written and how many convolutions ONNX Runtime runs in integer kernels.

    Raises:
        ConfigError: input not an existing ``.onnx``, an unknown node to exclude or format.
        DatasetError: calibration data of the wrong shape or with NaN/Inf.
        ExportError: quantisation failed, or the result does not run or is non-finite.
    """
    try:
        fmt = CpuInt8Format(fmt)
    except ValueError:
        accepted = ", ".join(f.value for f in CpuInt8Format)
        raise ConfigError(f"CPU INT8 format {fmt!r}; accepted: {accepted}") from None
    onnx_in = check_onnx_path(onnx_in, "FP32 model")
    onnx_out = Path(onnx_out)
    check_parent_exists(onnx_out)
    model = load_model(onnx_in)
    spec = input_spec(model, onnx_in)
    data = check_samples(calibration, spec, "INT8 calibration data")
    names = {node.name for node in model.graph.node}
    unknown = [n for n in nodes_to_exclude if n not in names]
    if unknown:
        raise ConfigError(
            f"nodes_to_exclude {unknown} are not nodes of {onnx_in}; accepted: its node names"
        )
    onnx = require("onnx", "CPU INT8 quantisation")
    require("onnxruntime.quantization", "CPU INT8 quantisation")
    parent = onnx_out.absolute().parent
    with tempfile.TemporaryDirectory(prefix=".medseg-int8cpu-", dir=parent) as tmp:
        work_in, work_out = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.cpu.onnx"
        calib_path = Path(tmp) / "calibration.npy"
        onnx.save(model, str(work_in))
        np.save(calib_path, data)
        # In a fresh interpreter: modelopt (the TensorRT file's quantiser, often run earlier
        # in the same export) patches onnxruntime.quantization's calibrators process-wide,
        # and ONNX Runtime's own quantize_static fails under those patches.
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        command = [
            sys.executable,
            "-m",
            __name__,
            fmt.value,
            str(work_in),
            str(work_out),
            str(calib_path),
        ]
        done = subprocess.run(
            [*command, *nodes_to_exclude], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 or not work_out.is_file():
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise ExportError(
                f"ONNX Runtime INT8 quantisation of {onnx_in} failed: "
                f"{lines[-1] if lines else f'exit code {done.returncode}'}"
            )
        quantized = load_model(work_out)
        copy_metadata(model, quantized)
        with atomic_file(onnx_out) as tmp_out:
            onnx.save(quantized, str(tmp_out))
            run_model(tmp_out, data[:2], f"CPU INT8 model quantised from {onnx_in}")
            integer, _ = ort_conv_fusion(tmp_out)
    total = sum(1 for node in model.graph.node if node.op_type == "Conv")
    return CpuInt8Result(onnx_out, tuple(nodes_to_exclude), int(data.shape[0]), integer, total, fmt)


def _quantize_static(
    fmt: CpuInt8Format,
    onnx_in: Path,
    onnx_out: Path,
    calibration: np.ndarray,
    nodes_to_exclude: list[str],
) -> None:
    """ONNX Runtime's pre-processing and ``quantize_static`` (in a process of its own)."""
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = input_spec(load_model(onnx_in), onnx_in).name

    class _Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self.samples, None)
            return None if sample is None else {name: sample}

    pre = onnx_out.with_name("model.pre.onnx")
    # ORT's recommended pre-processing: shape inference and graph optimisation (BN folding...)
    # so that the quantiser sees the graph the session will run.
    quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True)
    quantization.quantize_static(
        str(pre),
        str(onnx_out),
        _Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=(
            quantization.QuantType.QInt8
            if fmt is CpuInt8Format.S8S8
            else quantization.QuantType.QUInt8
        ),
        weight_type=quantization.QuantType.QInt8,
        reduce_range=fmt is CpuInt8Format.U8S8_REDUCED,
        per_channel=True,
        calibrate_method=quantization.CalibrationMethod.MinMax,
        nodes_to_exclude=nodes_to_exclude,
    )


def ort_conv_fusion(path: Path) -> tuple[int, int]:
    """``(integer, float)`` convolutions of ``path`` after ONNX Runtime's CPU optimisations.

    Integer: ``QLinearConv`` / ``ConvInteger`` nodes; float: ``Conv`` / ``FusedConv`` nodes
    (a Q/DQ convolution ORT failed to fuse ends up as a float one between Q/DQ nodes).
    """
    from medseg.runtime.backends.onnxruntime import SessionFromOnnx

    onnx = require("onnx", "reading ONNX models")
    with tempfile.TemporaryDirectory(prefix="medseg-ortopt-") as tmp:
        optimised = Path(tmp) / "optimised.onnx"
        try:
            SessionFromOnnx(path, ["cpu"], threads=1, optimized_path=optimised)()
        except ConfigError as exc:
            raise ExportError(str(exc)) from exc
        ops = Counter(node.op_type for node in onnx.load(str(optimised)).graph.node)
    return ops["QLinearConv"] + ops["ConvInteger"], ops["Conv"] + ops["FusedConv"]


if __name__ == "__main__":  # quantize_int8_cpu's worker: FORMAT IN OUT CALIBRATION.npy [NODE...]
    _quantize_static(
        CpuInt8Format(sys.argv[1]),
        Path(sys.argv[2]),
        Path(sys.argv[3]),
        np.load(sys.argv[4]),
        list(sys.argv[5:]),
    )
