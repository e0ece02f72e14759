"""OpenVINO backend: the bundle's ONNX files compiled for the CPU, precision and threads explicit.

OpenVINO's default inference precision on a CPU with native BF16 is BF16, so the hint is
always set: ``fp32``, ``fp16`` (the AutoCast file, weights upcast as in ONNX Runtime) and
``int8`` (``model.int8.cpu.onnx`` when the bundle has it, else the TensorRT-form Q/DQ file;
unquantised ops in FP32) run with ``INFERENCE_PRECISION_HINT=f32``;
``bf16`` runs the FP32 file with the ``bf16`` hint, only where the CPU has AVX512_BF16 or
AMX (:func:`medseg.runtime.cpu.require_bf16`). The compiled model is cached on disk by
OpenVINO (``CACHE_DIR``, one folder per ONNX file, next to the bundle); the blob does not
depend on the precision hint, and a cache OpenVINO cannot load is rebuilt with one warning.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bundle.entries import InputSpec
from medseg.deps import require
from medseg.errors import ConfigError
from medseg.runtime.backends.base import Backend, ModelIO, _missing
from medseg.runtime.backends.session import SessionRunner, is_loaded_model

__all__ = [
    "PRECISION_HINTS",
    "CompiledModelFromOnnx",
    "OpenVinoBackend",
    "OpenVinoRunner",
]

#: Runtime precision -> OpenVINO ``INFERENCE_PRECISION_HINT``.
PRECISION_HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}
_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class CompiledModelFromOnnx:
    """Loader: an ``openvino.CompiledModel`` of one ONNX file on the CPU device.

    Args:
        path: the ``.onnx`` file.
        precision: ``"fp32"``, ``"fp16"``, ``"int8"`` or ``"bf16"`` (see :data:`PRECISION_HINTS`).
        threads: ``INFERENCE_NUM_THREADS``; ``None``: OpenVINO's default (all cores).
        cache_dir: OpenVINO model cache folder for this file; ``None``: no cache.
    """

    def __init__(
        self, path: Path, precision: str, threads: int | None = None, cache_dir: Path | None = None
    ) -> None:
        if precision not in PRECISION_HINTS:
            raise ConfigError(
                f"OpenVINO precision {precision!r}; accepted: {', '.join(PRECISION_HINTS)}"
            )
        if threads is not None and threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        require("openvino", "running ONNX models with OpenVINO")  # before any heavy work
        if precision == "bf16":
            from medseg.runtime.cpu import require_bf16

            require_bf16()
        self.path = Path(path)
        self.precision = precision
        self.threads = threads
        self.cache_dir = cache_dir
        self.loaded_from_cache = False

    def config(self) -> dict[str, Any]:
        """The compile properties (without the cache folder)."""
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def __call__(self) -> Any:
        ov = require("openvino", "running ONNX models with OpenVINO")
        from openvino.frontend import FrontEndManager

        # Checked with the ONNX frontend alone: given a file no frontend recognises, OpenVINO
        # tries each (TensorFlow's prints parser errors straight to stderr) before failing.
        if not FrontEndManager().load_by_framework("onnx").supported(str(self.path)):
            raise ConfigError(
                f"{self.path}: not an ONNX model OpenVINO's ONNX reader accepts (corrupt, "
                "truncated or another format); re-export the bundle"
            )
        core = ov.Core()
        config = self.config()
        cache = self._usable_cache()
        had_blob = cache is not None and any(cache.glob("*.blob"))
        try:
            if cache is not None:
                try:
                    compiled = core.compile_model(
                        str(self.path), "CPU", {**config, "CACHE_DIR": str(cache)}
                    )
                except RuntimeError:  # a cache OpenVINO chokes on: drop it, compile again
                    if not had_blob:
                        raise
                    shutil.rmtree(cache, ignore_errors=True)
                    _warn_once(
                        str(cache), f"{cache}: OpenVINO cannot read its model cache; rebuilt"
                    )
                    compiled = core.compile_model(
                        str(self.path), "CPU", {**config, "CACHE_DIR": str(cache)}
                    )
                    had_blob = False
                self.loaded_from_cache = bool(compiled.get_property("LOADED_FROM_CACHE"))
                if had_blob and not self.loaded_from_cache:  # OpenVINO rewrote the blob
                    _warn_once(
                        str(cache),
                        f"{cache}: the OpenVINO model cache was corrupt or from another "
                        "OpenVINO version; rebuilt",
                    )
            else:
                compiled = core.compile_model(str(self.path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for unreadable models
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            # OpenVINO's first lines are "Exception from src/...cpp:NNN:": keep the reason
            reasons = [line for line in lines if not line.startswith(("Exception from", "Check "))]
            first = (reasons or lines or [type(exc).__name__])[0][:200]
            raise ConfigError(f"{self.path}: OpenVINO cannot compile it ({first})") from None
        return compiled

    def _usable_cache(self) -> Path | None:
        if self.cache_dir is None:
            return None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            # one probe per process: two processes opening the same bundle must not race
            probe = self.cache_dir / f".write-test-{os.getpid()}"
            probe.touch()
            probe.unlink(missing_ok=True)
        except OSError as exc:
            _warn_once(
                str(self.cache_dir),
                f"{self.cache_dir}: cannot write the OpenVINO model cache ({exc.strerror}); "
                "compiling without it",
            )
            return None
        return self.cache_dir


class OpenVinoBackend(Backend):
    """Runs an ONNX file with OpenVINO on the CPU (see :class:`CompiledModelFromOnnx`)."""

    name = "openvino"

    def __init__(
        self,
        onnx_path: Path,
        input_spec: InputSpec,
        output_name: str,
        num_classes: int,
        *,
        precision: str = "fp32",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        super().__init__(input_spec, output_name, num_classes)
        self.loader = CompiledModelFromOnnx(onnx_path, precision, threads, cache_dir)
        self.compiled: Any = None
        self.request: Any = None
        self._runner: Any = None

    @property
    def threads(self) -> int | None:
        """Inference threads of the compiled model (``None`` before :meth:`load`)."""
        if self.compiled is None:
            return self.loader.threads
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def describe(self) -> str:
        hint = PRECISION_HINTS[self.loader.precision]
        cache = ", from cache" if self.loader.loaded_from_cache else ""
        return f"openvino (CPU, {hint}; {self.threads or 'default'} threads{cache})"

    @classmethod
    def available(cls) -> str | None:
        return _missing("openvino", "openvino")

    def _load_impl(self) -> None:
        self.compiled = self.loader()
        self._runner = OpenVinoRunner(self.compiled)
        self.request = self._runner.request

    def _model_io(self) -> ModelIO:
        def ports(items: Any) -> dict[str, tuple[int | str | None, ...]]:
            shapes: dict[str, tuple[int | str | None, ...]] = {}
            for port in items:
                shape = port.get_partial_shape()
                dims = (
                    tuple(int(d.get_length()) if d.is_static else None for d in shape)
                    if shape.rank.is_static
                    else ()
                )
                for name in port.get_names():
                    shapes[name] = dims
            return shapes

        return ModelIO(
            str(self.loader.path), ports(self.compiled.inputs), ports(self.compiled.outputs)
        )

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        out = self._runner.infer({self.input_spec.name: batch}, [self.output_name])
        logits = np.asarray(out[self.output_name], dtype=np.float32)
        return logits, self._runner.last_ms

    def _close_impl(self) -> None:
        self.request = None
        self._runner = None
        self.compiled = None


class OpenVinoRunner(SessionRunner):
    """Runs an ``openvino.CompiledModel`` through one infer request.

    Args:
        compiled: the compiled model, a loader returning one (e.g.
            :class:`~medseg.runtime.backends.openvino.CompiledModelFromOnnx`), or an
            ``.onnx`` path (compiled for the CPU with ``precision``'s hint, no cache).
        precision: see :data:`~medseg.runtime.backends.openvino.PRECISION_HINTS` (a path only).
    """

    def __init__(self, compiled: Any, precision: str = "fp32") -> None:
        if isinstance(compiled, str | Path):
            compiled = CompiledModelFromOnnx(Path(compiled), precision)
        self.compiled: Any = compiled if is_loaded_model(compiled) else compiled()
        self.request: Any = self.compiled.create_infer_request()
        self.input_names = tuple(p.get_any_name() for p in self.compiled.inputs)
        self.output_names = tuple(p.get_any_name() for p in self.compiled.outputs)

    def infer(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        start = time.perf_counter_ns()
        self.request.infer(dict(feed))
        self.last_ms = (time.perf_counter_ns() - start) / 1e6
        names = list(outputs) if outputs is not None else list(self.output_names)
        # copies: OpenVINO reuses its output tensors on the next call
        return {name: np.array(self.request.get_tensor(name).data) for name in names}
