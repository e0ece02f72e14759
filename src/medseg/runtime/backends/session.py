"""Runners of one model file that need no manifest (Polygraphy's ``OnnxrtRunner`` pattern).

A :class:`SessionRunner` wraps a loaded model (an ONNX Runtime session, an OpenVINO compiled
model) and reads its input and output names from it: ``runner.infer(feed)`` runs a feed dict
and returns the outputs by name; ``runner(batch)`` feeds the first input and returns the
first output as float32. Export and calibration use them on files that have no bundle yet
(parity checks, accuracy of each precision, sensitivity analysis), and the manifest-checked
backends (:class:`~medseg.runtime.backends.onnxruntime.OnnxRuntimeBackend`,
:class:`~medseg.runtime.backends.openvino.OpenVinoBackend`) run their batches through one, so
``session.run`` is called in one place. Heavy libraries are imported by the loaders only.

    runner = runner_from_path(Path("model.onnx"), "onnxruntime")  # medseg.runtime.backends.runners
    logits = run_batches(runner, images, batch_size=8)  # (N, C, H, W) -> (N, K, H, W)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["SessionRunner", "is_loaded_model", "run_batches"]


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


def is_loaded_model(model: Any) -> bool:
    """An ONNX Runtime session or an OpenVINO compiled model (both are callable or have run)."""
    return hasattr(model, "get_inputs") or hasattr(model, "create_infer_request")


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
