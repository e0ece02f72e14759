"""The names medseg accepts for precisions and backends, and their orders: defined once here.

Every module, the CLI help and the reports take them from here (no dependency: the lean
runtime imports this module).
"""

from __future__ import annotations

__all__ = ["BACKENDS", "BENCH_BACKENDS", "PRECISIONS", "RUNTIME_BACKENDS"]

#: Precisions of a bundle, FP32 (the reference) first.
PRECISIONS = ("fp32", "fp16", "int8")

#: Every backend, in pipeline order: the eager PyTorch reference, ONNX Runtime (any machine),
#: TensorRT (the target). Report rows and gate keys follow this order.
BACKENDS = ("torch", "onnxruntime", "tensorrt")

#: Backends of the runtime (``medseg infer``, ``Segmenter``), in ``--backend auto``'s order of
#: preference: TensorRT when an engine may run here, else ONNX Runtime.
RUNTIME_BACKENDS = tuple(b for b in reversed(BACKENDS) if b != "torch")

#: Backends ``medseg bench`` measures, in the order it runs them (the reference last).
BENCH_BACKENDS = (*BACKENDS[1:], BACKENDS[0])
