"""The names medseg accepts for precisions and backends, and their orders: defined once here.

Every module, the CLI help and the reports take them from here (no dependency: the lean
runtime imports this module).
"""

from __future__ import annotations

__all__ = [
    "BACKENDS",
    "BENCH_BACKENDS",
    "PRECISIONS",
    "RUNTIME_BACKENDS",
    "RUNTIME_PRECISIONS",
    "file_precision",
]

#: Precisions of a bundle's files, FP32 (the reference) first.
PRECISIONS = ("fp32", "fp16", "int8")

#: Precisions the runtime runs: the files' plus ``bf16``, the FP32 file run with BF16
#: arithmetic (OpenVINO on a CPU with native BF16); it has no file of its own.
RUNTIME_PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: Every backend, in pipeline order: the eager PyTorch reference, the CPU runtimes (ONNX
#: Runtime anywhere, OpenVINO on x86 consoles), then the GPU engines (TensorRT-RTX on RTX
#: workstations, TensorRT on the target). Report rows and gate keys follow this order.
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt-rtx", "tensorrt")

#: Backends of the runtime (``medseg infer``, ``Segmenter``), in ``--backend auto``'s order of
#: preference: a TensorRT engine, a TensorRT-RTX plan, then the CPU backends.
RUNTIME_BACKENDS = ("tensorrt", "tensorrt-rtx", "openvino", "onnxruntime")

#: Backends ``medseg bench`` measures, in the order it runs them (the reference last).
BENCH_BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")


def file_precision(precision: str) -> str:
    """The bundle file a runtime precision runs: ``bf16`` runs the FP32 file."""
    return "fp32" if precision == "bf16" else precision
