"""Inference backends behind one interface, and the choice between them.

``onnxruntime`` runs the bundle's ONNX files (CPU everywhere; CUDA when present);
``tensorrt`` runs an engine that ``medseg build`` compiled on this device; ``openvino`` runs
the ONNX files on the CPU (FP32, FP16, INT8, and ``bf16``: the FP32 file with OpenVINO's BF16
hint, where the CPU has native BF16). Each backend module imports its heavy library only when
a backend is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.runtime.backends.base import Backend, InferTiming

__all__ = [
    "BACKENDS",
    "BF16_BACKENDS",
    "OPENVINO_CACHE_DIR",
    "Backend",
    "InferTiming",
    "create_backend",
]

#: Backend names the CLI and :func:`create_backend` accept (besides ``"auto"``).
BACKENDS = ("tensorrt", "onnxruntime", "openvino")
#: OpenVINO model cache inside the bundle (one folder per ONNX file).
OPENVINO_CACHE_DIR = "cache/openvino"
#: Backends that run ``bf16`` (a runtime precision: the FP32 file, BF16 arithmetic).
BF16_BACKENDS = ("openvino",)


def create_backend(
    bundle: Path,
    manifest: Manifest,
    backend: str,
    precision: str,
    *,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
    cuda_graph: bool = False,
) -> Backend:
    """A backend (not loaded yet) for one precision of a bundle.

    ``"auto"`` picks TensorRT when an engine built on this device for ``precision`` exists and
    TensorRT and a GPU are usable; else, on a machine without an NVIDIA GPU, OpenVINO when it
    is installed and the manifest records this precision's accuracy on it (always for
    ``bf16``); ONNX Runtime otherwise, or when ``providers`` are given. Files are checked against
    the manifest: the ONNX sha256, or the engine's sidecar (GPU, TensorRT version, source ONNX).
    """
    engine: Path | None = None
    if backend == "auto":
        from medseg.runtime.engines import find_engine

        engine = None if precision == "bf16" else find_engine(bundle, manifest, precision)
        if engine:
            backend = "tensorrt"
        else:  # ONNX Runtime providers asked for: the user means ONNX Runtime
            backend = (
                "onnxruntime"
                if providers and precision != "bf16"
                else _cpu_backend(manifest, precision)
            )
    _check_options(backend, providers, threads, cuda_graph)
    if precision == "bf16" and backend not in BF16_BACKENDS:
        raise ConfigError(
            f"--precision bf16 runs on {', '.join(BF16_BACKENDS)} (the FP32 file with BF16 "
            f"arithmetic), not on {backend}: pass --backend openvino"
        )
    if backend == "openvino":
        from medseg.runtime.backends.openvino import OpenVinoBackend

        file_precision = "fp32" if precision == "bf16" else precision
        path = manifest.onnx_path(bundle, file_precision)
        return OpenVinoBackend(
            path,
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            precision=precision,
            threads=threads,
            cache_dir=Path(bundle) / OPENVINO_CACHE_DIR / path.stem,
        )
    if backend == "onnxruntime":
        from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            manifest.onnx_path(bundle, precision),
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            providers=providers,
            threads=threads,
        )
    if backend == "tensorrt":
        from medseg.runtime.backends.tensorrt import TensorRTBackend
        from medseg.runtime.cuda import gpu_info
        from medseg.runtime.engines import check_engine, tensorrt_module

        if engine is None:
            trt = tensorrt_module()
            lean = trt.__name__ == "tensorrt_lean"
            engine = check_engine(bundle, manifest, precision, gpu_info(), trt.__version__, lean)
        return TensorRTBackend(
            engine,
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            cuda_graph=cuda_graph,
        )
    raise ConfigError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")


def _cpu_backend(manifest: Manifest, precision: str) -> str:
    """``openvino`` when installed, no NVIDIA GPU is visible and the bundle records this
    precision's accuracy on OpenVINO (bundles exported before that: ONNX Runtime, whose
    accuracy they record); always for bf16."""
    import importlib.util

    if precision == "bf16":  # only OpenVINO runs it (a missing install is reported there)
        return "openvino"
    if importlib.util.find_spec("openvino") is None:
        return "onnxruntime"
    if precision not in manifest.backend_accuracy.get("openvino", {}):
        return "onnxruntime"
    from medseg.runtime.cuda import gpu_available

    return "onnxruntime" if gpu_available() else "openvino"


def _check_options(
    backend: str, providers: Sequence[str] | None, threads: int | None, cuda_graph: bool
) -> None:
    """Options of one backend given to the other are errors, not silently ignored."""
    if backend == "tensorrt" and (providers or threads is not None):
        raise ConfigError(
            "--providers and --threads set ONNX Runtime; the backend here is TensorRT "
            "(pass --backend onnxruntime to use them)"
        )
    if backend in ("onnxruntime", "openvino") and cuda_graph:
        name = "ONNX Runtime" if backend == "onnxruntime" else "OpenVINO"
        raise ConfigError(
            f"--cuda-graph is a TensorRT option; the backend here is {name} (no TensorRT "
            f"engine for this device, or --backend {backend})"
        )
    if backend == "openvino" and providers:
        raise ConfigError(
            "--providers sets ONNX Runtime; the backend here is OpenVINO (pass --backend "
            "onnxruntime to use them)"
        )
