"""A CPU runner of one ONNX file by backend name (see :mod:`medseg.runtime.backends.session`)."""

from __future__ import annotations

from pathlib import Path

from medseg.errors import ConfigError
from medseg.runtime.backends.onnxruntime import OnnxRuntimeRunner
from medseg.runtime.backends.openvino import OpenVinoRunner
from medseg.runtime.backends.session import SessionRunner

__all__ = ["runner_from_path"]


def runner_from_path(path: Path, backend: str, precision: str = "fp32") -> SessionRunner:
    """A CPU runner of one ONNX file (loaded once, here).

    Args:
        path: the ``.onnx`` file.
        backend: ``"onnxruntime"`` or ``"openvino"``.
        precision: matters to OpenVINO only (its inference-precision hint: ``bf16`` runs the
            FP32 file with BF16 arithmetic; everything else with ``f32``).

    Raises:
        ConfigError: another backend name, or a file the backend cannot load.
    """
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path)
    if backend == "openvino":
        return OpenVinoRunner(path, precision)
    raise ConfigError(f"unknown CPU backend {backend!r}; accepted: onnxruntime, openvino")
