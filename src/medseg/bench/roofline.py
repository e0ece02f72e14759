"""The compute roofline of a CPU bench row: how far a measured time is from the FP32 peak.

- **Work**: GFLOP per slice counted from the FP32 ONNX graph (:func:`onnx_gflop_per_slice`):
  ``2 x MACs`` of every ``Conv`` / ``ConvTranspose`` / ``Gemm`` / ``MatMul`` at the network's
  static input size (batch 1), after ONNX shape inference; element-wise ops are left out
  (they are memory-bound, a few % of the work).
- **Peak** (:func:`cpu_fp32_peak`): ``cores x FMA units x FP32 lanes x 2 flops x GHz``, where
  cores = the threads the bench used (at most the cores available), FMA units = 2 per core
  (every x86 core since Haswell / Zen 1), lanes = 16 with AVX-512F, 8 with AVX2 + FMA, 4
  otherwise, and the clock is the ``cpu MHz`` of ``/proc/cpuinfo`` (the current, not the
  turbo clock). The derivation is stored with the number.
- **Share of peak** (:func:`share_of_peak`) of a row: ``GFLOP per slice x slices per second
  / peak``. INT8 and BF16 rows are compared with the same FP32 peak, so a share above 100 %
  means the lower precision beat the FP32 roofline.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from medseg.deps import require
from medseg.runtime.cpu import CPUINFO

__all__ = ["FMA_UNITS", "cpu_fp32_peak", "onnx_gflop_per_slice", "share_of_peak"]

#: FMA pipes per core assumed by the peak (x86 since Haswell / Zen 1).
FMA_UNITS = 2


def _static_model(path: Path) -> Any:
    onnx = require("onnx", "counting the FLOPs of an ONNX graph")
    model = onnx.load(str(path))
    for tensor in model.graph.input:  # batch 1 (and any other symbolic dim: 1)
        for dim in tensor.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    return onnx.shape_inference.infer_shapes(model)


def onnx_gflop_per_slice(path: Path) -> float:
    """GFLOP (``2 x MACs`` of convolutions and matrix products) of one slice through ``path``.

    Raises:
        MissingDependencyError: ``onnx`` is not installed.
    """
    model = _static_model(Path(path))
    shapes: dict[str, list[int]] = {}
    for info in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if not weight or not out:
                continue
            if node.op_type == "Conv":  # W: (Cout, Cin/g, kh, kw); out: (N, Cout, H, W)
                macs += math.prod(out) * math.prod(weight[1:])
            else:  # W: (Cin, Cout/g, kh, kw): every input pixel scatters Cout/g x kh x kw
                inp = shapes.get(node.input[0])
                if inp:
                    macs += math.prod(inp) * math.prod(weight[1:])
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1:
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out:
                macs += math.prod(out) * a[-1]
    return 2.0 * macs / 1e9


def _cpuinfo() -> tuple[set[str], float | None]:
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set(), None
    flags: set[str] = set()
    mhz: float | None = None
    for line in text.splitlines():
        low = line.lower()
        if low.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        elif low.startswith("cpu mhz") and mhz is None:
            try:
                mhz = float(line.split(":", 1)[1])
            except ValueError:
                mhz = None
    return flags, mhz


def cpu_fp32_peak(threads: int | None) -> dict[str, Any]:
    """This CPU's FP32 peak for ``threads`` cores, and how it was derived.

    Returns:
        ``{"gflops": float | None, "how": str}`` (``gflops`` None where the clock or the
        flags cannot be read, e.g. not Linux).
    """
    flags, mhz = _cpuinfo()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = min(threads or available or 1, available or threads or 1)
    if mhz is None or not flags:
        return {"gflops": None, "how": f"{CPUINFO} has no flags or cpu MHz: peak unknown"}
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512F"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    ghz = mhz / 1000.0
    gflops = cores * FMA_UNITS * lanes * 2 * ghz
    how = (
        f"{cores} cores x {FMA_UNITS} FMA x {lanes} FP32 lanes ({isa}) x 2 flops x "
        f"{ghz:.2f} GHz ({CPUINFO} cpu MHz) = {gflops:.0f} GFLOP/s"
    )
    return {"gflops": round(gflops, 1), "how": how}


def share_of_peak(
    gflop_per_slice: float | None, slices_per_s: float | None, peak_gflops: float | None
) -> float | None:
    """Percent of the FP32 peak a row reaches (``None`` when a term is unknown)."""
    if not gflop_per_slice or not slices_per_s or not peak_gflops:
        return None
    return 100.0 * gflop_per_slice * slices_per_s / peak_gflops
