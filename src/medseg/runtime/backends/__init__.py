"""Inference backends behind one interface, and the choice between them.

``onnxruntime`` runs the bundle's ONNX files (CPU everywhere; CUDA when present);
``tensorrt`` runs an engine that ``medseg build`` compiled on this device. Each backend
module imports its heavy library only when a backend is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.names import RUNTIME_BACKENDS
from medseg.runtime.backends.base import Backend, InferTiming

if TYPE_CHECKING:
    from medseg.runtime.engines import EngineSidecar

__all__ = ["BACKENDS", "Backend", "InferTiming", "create_backend"]

#: Backend names the CLI and :func:`create_backend` accept (besides ``"auto"``), in auto's
#: order of preference (:data:`medseg.names.RUNTIME_BACKENDS`).
BACKENDS = RUNTIME_BACKENDS


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
    TensorRT and a GPU are usable, ONNX Runtime otherwise; when the bundle has an engine that
    was refused, the backend's ``selection_note`` says which and why (one line to show). Files
    are checked against the manifest: the ONNX sha256, or the engine's sidecar (GPU, TensorRT
    version, source ONNX).
    """
    engine: Path | None = None
    sidecar: EngineSidecar | None = None
    refused: str | None = None
    if backend == "auto":
        from medseg.runtime.engines import select_engine

        choice = select_engine(bundle, manifest, precision)  # already checked for this device
        engine, refused, sidecar = choice.plan, choice.refused, choice.sidecar
        backend = "tensorrt" if engine else "onnxruntime"
    _check_options(backend, providers, threads, cuda_graph)
    if backend == "onnxruntime":
        from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        runner = OnnxRuntimeBackend(
            manifest.onnx_path(bundle, precision),
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            providers=providers,
            threads=threads,
        )
        if refused is not None:
            runner.selection_note = f"{refused}; running ONNX Runtime instead"
        return runner
    if backend == "tensorrt":
        from medseg.runtime.backends.tensorrt import EngineFromPath, TensorRTBackend
        from medseg.runtime.cuda import gpu_info
        from medseg.runtime.engines import resolve_engine, tensorrt_module

        if engine is None:
            trt = tensorrt_module()
            lean = trt.__name__ == "tensorrt_lean"
            engine, sidecar = resolve_engine(
                bundle, manifest, precision, gpu_info(), trt.__version__, lean
            )
        return TensorRTBackend(
            EngineFromPath(engine, sidecar),  # the sidecar checked above, not read again
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            cuda_graph=cuda_graph,
        )
    raise ConfigError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")


def _check_options(
    backend: str, providers: Sequence[str] | None, threads: int | None, cuda_graph: bool
) -> None:
    """Options of one backend given to the other are errors, not silently ignored."""
    if backend == "tensorrt" and (providers or threads is not None):
        raise ConfigError(
            "--providers and --threads set ONNX Runtime; the backend here is TensorRT "
            "(pass --backend onnxruntime to use them)"
        )
    if backend == "onnxruntime" and cuda_graph:
        raise ConfigError(
            "--cuda-graph is a TensorRT option; the backend here is ONNX Runtime (no TensorRT "
            "engine for this device, or --backend onnxruntime)"
        )
