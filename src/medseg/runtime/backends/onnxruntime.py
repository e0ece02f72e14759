"""ONNX Runtime backend: the CPU provider everywhere, CUDA / TensorRT providers when present.

ONNX Runtime runs the bundle's ``.onnx`` files directly (FP32, AutoCast FP16, Q/DQ INT8), so
it is the backend of CI and of machines without TensorRT. On CPU, FP16 weights are upcast
(the file's rounding is reproduced, FP16 arithmetic is not); INT8 Q/DQ numerics are exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import InputSpec
from medseg.deps import require
from medseg.errors import ConfigError
from medseg.options import available_cpus, check_threads
from medseg.runtime.backends.base import Backend, ModelIO, _missing
from medseg.runtime.backends.session import SessionRunner, is_loaded_model

__all__ = [
    "PROVIDER_NAMES",
    "OnnxRuntimeBackend",
    "OnnxRuntimeRunner",
    "SessionFromOnnx",
    "default_providers",
]

#: Short provider names the CLI accepts -> ONNX Runtime execution provider names.
PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, then CPU (always last).

    The TensorRT provider is opt-in (``providers=["tensorrt", "cuda", "cpu"]``): it compiles
    its own engine on first use, which takes minutes; ``medseg build`` is the place for that.
    """
    ort = require("onnxruntime", "running ONNX models")
    available = set(ort.get_available_providers())
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _resolve_providers(providers: Sequence[str] | None) -> list[str]:
    if providers is None:
        return default_providers()
    ort = require("onnxruntime", "running ONNX models")
    available = set(ort.get_available_providers())
    resolved = []
    for name in providers:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in PROVIDER_NAMES.values():
            raise ConfigError(
                f"unknown ONNX Runtime provider {name!r}; accepted: {', '.join(PROVIDER_NAMES)}"
            )
        if full not in available:
            raise ConfigError(
                f"ONNX Runtime provider {name!r} is not available in this onnxruntime build "
                f"(available: {', '.join(sorted(available))})"
            )
        resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


class SessionFromOnnx:
    """Loader: an ``onnxruntime.InferenceSession`` for one ONNX model; medseg's one session
    factory (runtime, export parity and accuracy, calibration and its sensitivity analysis).

    Args:
        path: the ``.onnx`` file, or a serialised model (``bytes``) held in memory.
        providers: provider names in priority order (``"cuda"``, ``"cpu"``...); ``None``:
            :func:`default_providers`.
        threads: intra-op threads; ``None``: ONNX Runtime's default (one per physical core).
        spinning: let idle worker threads spin (ONNX Runtime's default); off for jobs that
            share the machine (calibration next to training).
        optimized_path: where ONNX Runtime writes the model after its graph optimisations
            (to inspect which nodes it fused); ``None``: not written.
    """

    def __init__(
        self,
        path: Path | bytes,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        *,
        spinning: bool = True,
        optimized_path: Path | None = None,
    ) -> None:
        self.model: Path | bytes = path if isinstance(path, bytes) else Path(path)
        self.path = self.model if isinstance(self.model, Path) else "<ONNX model in memory>"
        self.spinning = spinning
        self.providers = _resolve_providers(providers)
        self.threads = check_threads(threads, "threads")
        self.optimized_path = optimized_path

    def __call__(self) -> Any:
        ort = require("onnxruntime", "running ONNX models")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if self.optimized_path is not None:
            options.optimized_model_filepath = str(self.optimized_path)
        source = str(self.model) if isinstance(self.model, Path) else self.model
        try:
            return ort.InferenceSession(source, options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own, unexported exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{self.path}: ONNX Runtime cannot load it ({first})") from exc


class OnnxRuntimeBackend(Backend):
    """Runs an ONNX model with ONNX Runtime.

    Args:
        onnx_path: the ``.onnx`` file (opened with :class:`SessionFromOnnx` and ``providers``,
            ``threads``), or a loader: a callable returning an ``InferenceSession``, or an
            ``InferenceSession`` itself (the Polygraphy ``SessionFromOnnx`` pattern).
        input_spec, output_name, num_classes: from the bundle manifest.
        providers, threads: see :class:`SessionFromOnnx` (only with a path).
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx_path: Path | Callable[[], Any] | Any,
        input_spec: InputSpec,
        output_name: str,
        num_classes: int,
        *,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(input_spec, output_name, num_classes)
        self.loader: Callable[[], Any]
        if isinstance(onnx_path, str | Path):
            self.loader = SessionFromOnnx(Path(onnx_path), providers, threads)
        else:
            if providers is not None or threads is not None:
                raise ConfigError(
                    "providers and threads configure a session made from a path; set them on "
                    "the session or loader given instead"
                )
            given = onnx_path
            self.loader = given if callable(given) else (lambda: given)
        self.session: Any = None
        self._runner: Any = None

    @property
    def threads(self) -> int:
        """Intra-op threads the session uses (ONNX Runtime's default: one per physical core)."""
        threads = getattr(self.loader, "threads", None)
        if threads is None and self.session is not None:
            threads = self.session.get_session_options().intra_op_num_threads or None
        return threads or available_cpus()

    @property
    def providers(self) -> list[str]:
        """Execution providers, in priority order."""
        if self.session is not None:
            return list(self.session.get_providers())
        return list(getattr(self.loader, "providers", []))

    def describe(self) -> str:
        providers = ", ".join(p.removesuffix("ExecutionProvider") for p in self.providers)
        path = getattr(self.loader, "path", None)
        file = f"; {path.name}" if isinstance(path, Path) else ""
        return f"onnxruntime ({providers}; {self.threads} threads{file})"

    @classmethod
    def available(cls) -> str | None:
        return _missing("onnxruntime", "runtime")

    def _load_impl(self) -> None:
        self.session = self.loader()
        self._runner = OnnxRuntimeRunner(self.session)

    def _model_io(self) -> ModelIO:
        return ModelIO(
            str(getattr(self.loader, "path", "the ONNX Runtime session given")),
            {i.name: tuple(i.shape) for i in self.session.get_inputs()},
            {o.name: tuple(o.shape) for o in self.session.get_outputs()},
        )

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        out = self._runner.infer({self.input_spec.name: batch}, [self.output_name])
        return np.asarray(out[self.output_name], dtype=np.float32), self._runner.last_ms

    def _close_impl(self) -> None:
        self.session = None
        self._runner = None


class OnnxRuntimeRunner(SessionRunner):
    """Runs an ``onnxruntime.InferenceSession``.

    Args:
        session: the session, a loader returning one (e.g.
            :class:`~medseg.runtime.backends.onnxruntime.SessionFromOnnx`), or an ``.onnx``
            path (opened with ``SessionFromOnnx(path, providers=["cpu"])``).
    """

    def __init__(self, session: Any) -> None:
        if isinstance(session, str | Path):
            session = SessionFromOnnx(Path(session), providers=["cpu"])
        self.session: Any = session if is_loaded_model(session) else session()
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def infer(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs is not None else list(self.output_names)
        start = time.perf_counter_ns()
        values = self.session.run(names, dict(feed))
        self.last_ms = (time.perf_counter_ns() - start) / 1e6
        return dict(zip(names, values, strict=True))
