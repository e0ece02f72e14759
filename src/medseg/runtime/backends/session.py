"""Runners of one model file that need no manifest (Polygraphy's ``OnnxrtRunner`` pattern).

A :class:`SessionRunner` wraps a loaded model (an ONNX Runtime session, an OpenVINO compiled
model) and reads its input and output names from it: ``runner.infer(feed)`` runs a feed dict
and returns the outputs by name; ``runner(batch)`` feeds the first input and returns the
first output as float32. Export and calibration use them on files that have no bundle yet
(parity checks, accuracy of each precision, sensitivity analysis), and the manifest-checked
backends (:class:`~medseg.runtime.backends.onnxruntime.OnnxRuntimeBackend`,
:class:`~medseg.runtime.backends.openvino.OpenVinoBackend`) run their batches through one, so
``session.run`` is called in one place. Heavy libraries are imported by the loaders only.

    runner = runner_from_path(Path("model.onnx"), "onnxruntime")
    logits = run_batches(runner, images, batch_size=8)  # (N, C, H, W) -> (N, K, H, W)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError

__all__ = [
    "OnnxRuntimeRunner",
    "OpenVinoRunner",
    "SessionRunner",
    "run_batches",
    "runner_from_path",
]


class SessionRunner(ABC):
    """One loaded model, its input and output names read from it.

    Attributes:
        input_names: the model's inputs, in declaration order.
        output_names: its outputs, in declaration order.
        last_ms: milliseconds inside the library's run call of the latest :meth:`infer`
            (``perf_counter_ns``; output copies excluded).
    """

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    last_ms: float = 0.0

    @abstractmethod
    def infer(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one feed (input name -> array); the ``outputs`` asked for (``None``: all), by
        name. Arrays are the library's own (copied where the library reuses its buffers)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The first output, float32, for ``batch`` fed to the first input (e.g. ``(N, C, H,
        W)`` slices -> ``(N, K, H, W)`` logits)."""
        first = self.output_names[0]
        return np.asarray(self.infer({self.input_names[0]: batch}, [first])[first], np.float32)


def _is_model(model: Any) -> bool:
    """An ONNX Runtime session or an OpenVINO compiled model (both are callable or have run)."""
    return hasattr(model, "get_inputs") or hasattr(model, "create_infer_request")


class OnnxRuntimeRunner(SessionRunner):
    """Runs an ``onnxruntime.InferenceSession``.

    Args:
        session: the session, a loader returning one (e.g.
            :class:`~medseg.runtime.backends.onnxruntime.SessionFromOnnx`), or an ``.onnx``
            path (opened with ``SessionFromOnnx(path, providers=["cpu"])``).
    """

    def __init__(self, session: Any) -> None:
        if isinstance(session, str | Path):
            from medseg.runtime.backends.onnxruntime import SessionFromOnnx

            session = SessionFromOnnx(Path(session), providers=["cpu"])
        self.session: Any = session if _is_model(session) else session()
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
            from medseg.runtime.backends.openvino import CompiledModelFromOnnx

            compiled = CompiledModelFromOnnx(Path(compiled), precision)
        self.compiled: Any = compiled if _is_model(compiled) else compiled()
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


def run_batches(
    runner: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int = 8
) -> np.ndarray:
    """``runner`` over ``images`` in batches of ``batch_size`` along axis 0, concatenated.

    Args:
        runner: batch -> float32 outputs, e.g. a :class:`SessionRunner`.
        images: ``(N, C, H, W)`` (or ``(N, C, D, H, W)``) float32.

    Returns:
        ``(N, K, H, W)`` float32.
    """
    return np.concatenate(
        [runner(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    ).astype(np.float32, copy=False)
