"""TensorRT engine build (standard TensorRT on the target device: Jetson or a workstation with
a GPU; TensorRT-RTX anywhere, for RTX GPUs).

Compiles a bundle's ONNX files into ``engines/<key>/<precision>.plan`` + sidecar.
Precision comes from the ONNX file (AutoCast FP16, Q/DQ INT8): every network is strongly
typed, no calibration happens here. ``tensorrt`` is imported only when a build runs.

    from medseg.build import BuildOptions, build_engines
    built = build_engines(Path("bundle"), BuildOptions(precisions=("fp16",)), print)
"""

from __future__ import annotations

from medseg.build.engine import (
    BuildOptions,
    BuiltEngine,
    build_engine,
    build_engines,
    check_onnx_builds,
    compile_plan,
    open_runtime,
    parse_network,
    parse_size,
)

__all__ = [
    "BuildOptions",
    "BuiltEngine",
    "build_engine",
    "build_engines",
    "check_onnx_builds",
    "compile_plan",
    "open_runtime",
    "parse_network",
    "parse_size",
]
