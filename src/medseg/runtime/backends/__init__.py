"""Inference backends behind one interface, and the choice between them.

``onnxruntime`` runs the bundle's ONNX files (CPU everywhere; CUDA when present);
``tensorrt`` runs an engine that ``medseg build`` compiled on this device; ``tensorrt-rtx`` a
TensorRT-RTX plan (``medseg build --runtime tensorrt-rtx``) on an RTX GPU; ``openvino`` runs
the ONNX files on the CPU (FP32, FP16, INT8, and ``bf16``: the FP32 file with OpenVINO's BF16
hint, where the CPU has native BF16). Each backend module imports its heavy library only when
a backend is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.names import RUNTIME_BACKENDS, file_precision
from medseg.runtime.backends.base import Backend, InferTiming

if TYPE_CHECKING:
    from medseg.bundle.engines import EngineSidecar

__all__ = [
    "BACKENDS",
    "BF16_BACKENDS",
    "CPU_BACKENDS",
    "OPENVINO_CACHE_DIR",
    "Backend",
    "InferTiming",
    "backend_class",
    "create_backend",
    "installed_cpu_backends",
    "onnx_file_backend",
]

#: Backend names the CLI and :func:`create_backend` accept (besides ``"auto"``), in auto's
#: order of preference (:data:`medseg.names.RUNTIME_BACKENDS`).
BACKENDS = RUNTIME_BACKENDS
#: OpenVINO model cache inside the bundle (one folder per ONNX file).
OPENVINO_CACHE_DIR = "cache/openvino"
#: Backends that run ``bf16`` (a runtime precision: the FP32 file, BF16 arithmetic).
BF16_BACKENDS = ("openvino",)
#: Backends that run the bundle's ONNX files on the CPU (the export measures accuracy on each).
CPU_BACKENDS = ("onnxruntime", "openvino")


def backend_class(name: str) -> type[Backend]:
    """The class of a backend named as the CLI spells it (its module is imported; the heavy
    library it wraps is not).

    Raises:
        ConfigError: a name not in :data:`BACKENDS`.
    """
    if name == "onnxruntime":
        from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "openvino":
        from medseg.runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend
    if name == "tensorrt":
        from medseg.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend
    if name == "tensorrt-rtx":
        from medseg.runtime.backends.tensorrt_rtx import TensorRTRTXBackend

        return TensorRTRTXBackend
    raise ConfigError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)}")


def installed_cpu_backends() -> tuple[str, ...]:
    """The :data:`CPU_BACKENDS` that can run here (:meth:`Backend.available`)."""
    return tuple(b for b in CPU_BACKENDS if backend_class(b).available() is None)


def onnx_file_backend(
    backend: str,
    path: Path,
    manifest: Manifest,
    precision: str,
    providers: Sequence[str] | None,
    threads: int | None,
    cache_dir: Path | None,
) -> Backend:
    """An (unloaded) ONNX Runtime or OpenVINO backend of one ONNX file of a bundle.

    Args:
        backend: ``"onnxruntime"`` or ``"openvino"``.
        path: the ONNX file (already chosen and checked by the caller).
        providers: ONNX Runtime providers (ignored by OpenVINO; callers refuse them).
        cache_dir: OpenVINO's compiled-model cache (ignored by ONNX Runtime).
    """
    if backend == "openvino":
        from medseg.runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(
            path,
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            precision=precision,
            threads=threads,
            cache_dir=cache_dir,
        )
    from medseg.runtime.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(
        path,
        manifest.input,
        manifest.output_name,
        manifest.num_classes,
        providers=providers,
        threads=threads,
    )


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
    TensorRT and a GPU are usable; then a TensorRT-RTX plan for this GPU; else, on a machine
    without an NVIDIA GPU, OpenVINO when it is installed and the manifest records this
    precision's accuracy on it (always for ``bf16``); ONNX Runtime otherwise, or when
    ``providers`` are given. When the bundle has an engine that was refused, the CPU backend's
    ``selection_note`` says which and why (one line to show). Files are checked against the
    manifest: the ONNX sha256, or the engine's sidecar (GPU, TensorRT version, source ONNX).
    """
    engine: Path | None = None
    sidecar: EngineSidecar | None = None
    refused: str | None = None
    class_line: str | None = None
    if backend == "auto":
        from medseg.runtime.engines import EngineChoice, select_engine

        choice = (
            EngineChoice(None)
            if precision == "bf16"
            else select_engine(bundle, manifest, precision)  # already checked for this device
        )
        engine, refused, sidecar = choice.plan, choice.refused, choice.sidecar
        if engine is None and precision != "bf16":
            from medseg.runtime.engines_rtx import find_rtx_engine

            rtx_engine = find_rtx_engine(bundle, manifest, precision)
            if rtx_engine is not None:
                engine, refused = rtx_engine, None
                backend = "tensorrt-rtx"
        if engine is not None and backend == "auto":
            backend = "tensorrt"
        elif engine is None:  # ONNX Runtime providers asked for: the user means ONNX Runtime
            backend = (
                "onnxruntime"
                if providers and precision != "bf16"
                else _cpu_backend(manifest, precision)
            )
            if not providers:  # the precision whose accuracy is known on this CPU class
                backend, precision, class_line = _class_choice(manifest, backend, precision)
    if backend in ("onnxruntime", "openvino") and class_line is None:
        from medseg.runtime.accuracy_class import class_note
        from medseg.runtime.cpu import cpu_features

        class_line = class_note(manifest, backend, precision, cpu_features().cpu_class)
    _check_options(backend, providers, threads, cuda_graph)
    if precision == "bf16" and backend not in BF16_BACKENDS:
        raise ConfigError(
            f"--precision bf16 runs on {', '.join(BF16_BACKENDS)} (the FP32 file with BF16 "
            f"arithmetic), not on {backend}: pass --backend openvino"
        )
    if backend == "openvino":
        from medseg.bundle.cpu_files import int8_file_for

        # INT8: the file whose OpenVINO accuracy the bundle records (the export measures the
        # Q/DQ file and the CPU file on OpenVINO; which loses less depends on the model)
        path = (
            int8_file_for(manifest, bundle, "openvino")
            if precision == "int8"
            else manifest.onnx_path(bundle, file_precision(precision))
        )
        cache = Path(bundle) / OPENVINO_CACHE_DIR / path.stem
        openvino_runner = onnx_file_backend(
            backend, path, manifest, precision, None, threads, cache
        )
        if refused is not None:
            openvino_runner.selection_note = f"{refused}; running OpenVINO instead"
        return _noted(openvino_runner, class_line)
    if backend == "onnxruntime":
        from medseg.bundle.cpu_files import int8_file_for

        # INT8: ONNX Runtime's own QDQ file when the bundle has one (integer kernels for every
        # convolution); the TensorRT-form Q/DQ file otherwise.
        path = (
            int8_file_for(manifest, bundle, "onnxruntime")
            if precision == "int8"
            else manifest.onnx_path(bundle, precision)
        )
        runner = onnx_file_backend(backend, path, manifest, precision, providers, threads, None)
        if refused is not None:
            runner.selection_note = f"{refused}; running ONNX Runtime instead"
        return _noted(runner, class_line)
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
    if backend == "tensorrt-rtx":
        from medseg.runtime.backends.tensorrt_rtx import TensorRTRTXBackend
        from medseg.runtime.cuda import gpu_info
        from medseg.runtime.engines_rtx import check_rtx_engine, tensorrt_rtx_module

        if engine is None:
            version = str(tensorrt_rtx_module().__version__)
            engine = check_rtx_engine(bundle, manifest, precision, gpu_info(), version)
        return TensorRTRTXBackend(
            engine,
            manifest.input,
            manifest.output_name,
            manifest.num_classes,
            cuda_graph=cuda_graph,
        )
    raise ConfigError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")


def _noted(runner: Backend, line: str | None) -> Backend:
    """``runner`` with ``line`` (the CPU-class note) added to its ``selection_note``."""
    if line is not None:
        note = runner.selection_note
        runner.selection_note = line if note is None else f"{note}; {line}"
    return runner


def _class_choice(manifest: Manifest, backend: str, precision: str) -> tuple[str, str, str | None]:
    """``auto`` on a CPU: keep ``(backend, precision)`` where the bundle records its accuracy on
    this CPU class, else the other CPU backend or FP32 (:mod:`medseg.runtime.accuracy_class`)."""
    from medseg.runtime.accuracy_class import cpu_choice
    from medseg.runtime.cpu import cpu_features

    installed = installed_cpu_backends()
    choice = cpu_choice(manifest, backend, precision, cpu_features().cpu_class, installed)
    return choice.backend, choice.precision, choice.note


def _cpu_backend(manifest: Manifest, precision: str) -> str:
    """``openvino`` when installed, no NVIDIA GPU is visible and the bundle records this
    precision's accuracy on OpenVINO (bundles exported before that: ONNX Runtime, whose
    accuracy they record); always for bf16."""
    if precision == "bf16":  # only OpenVINO runs it (a missing install is reported there)
        return "openvino"
    if backend_class("openvino").available() is not None:
        return "onnxruntime"
    if precision not in manifest.backend_accuracy.get("openvino", {}):
        return "onnxruntime"
    from medseg.runtime.cuda import gpu_available

    return "onnxruntime" if gpu_available() else "openvino"


def _check_options(
    backend: str, providers: Sequence[str] | None, threads: int | None, cuda_graph: bool
) -> None:
    """Options of one backend given to the other are errors, not silently ignored."""
    if backend in ("tensorrt", "tensorrt-rtx") and (providers or threads is not None):
        label = "TensorRT-RTX" if backend == "tensorrt-rtx" else "TensorRT"
        raise ConfigError(
            f"--providers and --threads set ONNX Runtime; the backend here is {label} "
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
