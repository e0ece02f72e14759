"""The one interface every inference backend implements (the Polygraphy runner pattern).

A backend runs one network file on batches of network-size slices: ``(N, C, H, W)``
float32 in, logits ``(N, K, H, W)`` float32 out. The public methods :meth:`Backend.load`,
:meth:`Backend.infer` and :meth:`Backend.close` validate and time; subclasses fill in the
``_load_impl`` / ``_infer_impl`` / ``_close_impl`` hooks and nothing else. Backends are
context managers. Loading the model (an ONNX Runtime session, a deserialised engine) is a
separate small callable (see ``onnxruntime.SessionFromOnnx``, ``tensorrt.EngineFromPath``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

import numpy as np

from medseg.bundle.entries import InputSpec
from medseg.errors import ChannelMismatchError, ConfigError, ModelMismatchError

__all__ = ["Backend", "InferTiming", "ModelIO", "check_model_io"]

#: A dimension as a model file declares it: a size, or a symbolic / dynamic one.
Dim = int | str | None


def _missing(module: str, extra: str) -> str | None:
    """``None`` when ``module`` is installed, else the one-line reason naming the extra."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'medseg-edge[{extra}]')"
    return None


def _fixed(dim: Dim) -> int | None:
    """The size of a fixed dimension; ``None`` for a symbolic (``"batch"``) or dynamic one."""
    return dim if isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 else None


def check_model_io(
    where: str,
    spec: InputSpec,
    num_classes: int,
    input_shape: tuple[Dim, ...],
    output_shape: tuple[Dim, ...],
) -> None:
    """Check a model's input and output shapes against the manifest, when it is loaded.

    A model whose output has another class count than the manifest lists would write label
    values the manifest does not name; one with another channel count would fail on every
    batch. Symbolic and dynamic dimensions are accepted; fixed ones must match.

    Args:
        where: the model file, for the message.
        spec: the manifest's input (channels ``C``, ranges of ``N``, ``H``, ``W``).
        num_classes: the manifest's class count ``K``.
        input_shape: the model's input shape ``(N, C, H, W)`` as declared.
        output_shape: the model's logits shape ``(N, K, H, W)`` as declared.

    Raises:
        ModelMismatchError: a rank other than 4, or a fixed ``C`` / ``K`` / ``H`` / ``W``
            that differs from the manifest (the message names the manifest key).
    """
    rank, axes = (4, "(N, C, H, W)") if spec.depth is None else (5, "(N, C, D, H, W)")
    for what, shape in (("input", input_shape), ("output", output_shape)):
        if len(shape) != rank:
            raise ModelMismatchError(
                f"{where}: its {what} has shape {list(shape)}, expected {rank} dimensions {axes}"
            )
    channels, classes = _fixed(input_shape[1]), _fixed(output_shape[1])
    if channels is not None and channels != spec.channels:
        raise ModelMismatchError(
            f"{where}: the model takes {channels} channel(s) but medseg.json input.channels is "
            f"{spec.channels}; re-export the bundle"
        )
    if classes is not None and classes != num_classes:
        raise ModelMismatchError(
            f"{where}: the model outputs {classes} classes but medseg.json classes lists "
            f"{num_classes}; re-export the bundle (or fix its classes)"
        )
    spatial = [("input.height", input_shape[-2], spec.height)]
    spatial.append(("input.width", input_shape[-1], spec.width))
    if spec.depth is not None:
        spatial.insert(0, ("input.depth", input_shape[2], spec.depth))
    for key, dim, allowed in spatial:
        size = _fixed(dim)
        if size is not None and not (allowed.min == allowed.max == size):
            raise ModelMismatchError(
                f"{where}: the model's fixed {key.split('.')[1]} is {size} but medseg.json "
                f"{key} is {allowed}; re-export the bundle"
            )


@dataclass(frozen=True)
class ModelIO:
    """The inputs and outputs a loaded model declares, as each backend reads them.

    Attributes:
        where: the model file (or a description of the session given), for messages.
        inputs: input name -> declared shape (``int`` sizes; ``str``/``None`` for symbolic
            or dynamic dimensions).
        outputs: output name -> declared shape.
    """

    where: str
    inputs: dict[str, tuple[Dim, ...]]
    outputs: dict[str, tuple[Dim, ...]]


def check_model(io: ModelIO, spec: InputSpec, output_name: str, num_classes: int) -> None:
    """Compare a loaded model with the manifest: input and output names, then shapes.

    Raises:
        ModelMismatchError: a name the model lacks, or a shape :func:`check_model_io` refuses.
    """
    if spec.name not in io.inputs:
        raise ModelMismatchError(
            f"{io.where} has inputs {sorted(io.inputs)}, not medseg.json input.name "
            f"{spec.name!r}; re-export the bundle"
        )
    if output_name not in io.outputs:
        raise ModelMismatchError(
            f"{io.where} has outputs {sorted(io.outputs)}, not medseg.json output "
            f"{output_name!r}; re-export the bundle"
        )
    check_model_io(io.where, spec, num_classes, io.inputs[spec.name], io.outputs[output_name])


@dataclass(frozen=True)
class InferTiming:
    """Timing of one :meth:`Backend.infer` call.

    Attributes:
        compute_ms: time of the network itself: CUDA events around the engine launch on a GPU,
            ``perf_counter_ns`` around the session call on CPU.
        total_ms: wall time of the whole call, input checks and host<->device copies included.
        batch: number of slices ``N`` in the call.
    """

    compute_ms: float
    total_ms: float
    batch: int


class Backend(ABC):
    """Runs one network file on ``(N, C, H, W)`` float32 batches; returns ``(N, K, H, W)`` logits.

    Args:
        input_spec: the manifest's input: name, channels ``C`` and allowed ranges of N, H, W.
        output_name: name of the logits output.
        num_classes: ``K``.

    Attributes:
        name: backend name as the CLI spells it (``"onnxruntime"``, ``"tensorrt"``).
        last_timing: timing of the latest :meth:`infer` call (``None`` before the first).
        selection_note: set by ``create_backend(..., "auto")`` when it chose this backend
            because an engine was refused: one line saying which and why; else ``None``.
    """

    name: ClassVar[str] = "backend"

    def __init__(self, input_spec: InputSpec, output_name: str, num_classes: int) -> None:
        self.input_spec = input_spec
        self.output_name = output_name
        self.num_classes = num_classes
        self.last_timing: InferTiming | None = None
        self.selection_note: str | None = None
        self._loaded = False

    # -- public API -------------------------------------------------------------------------
    @classmethod
    def available(cls) -> str | None:
        """Whether this backend can run on this machine: ``None`` when it can, else the reason
        (one line naming what is missing and how to get it). Cheap: imports nothing heavy."""
        return None

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def load(self) -> Backend:
        """Create the session / engine context and buffers (idempotent). Returns ``self``.

        Every backend compares the loaded model with the manifest here (input name and
        channels, output name and class count, fixed spatial sizes), whatever runs it.

        Raises:
            ModelMismatchError: the model file disagrees with ``medseg.json``.
        """
        if not self._loaded:
            self._load_impl()
            try:
                check_model(self._model_io(), self.input_spec, self.output_name, self.num_classes)
            except BaseException:
                self._close_impl()
                raise
            self._loaded = True
        return self

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits ``(N, K, H, W)`` float32 for a ``(N, C, H, W)`` float32 batch.

        Raises:
            ConfigError: the batch has the wrong rank, dtype, channel count, or a size outside
                the allowed ranges (the message names both).
        """
        if not self._loaded:
            self.load()
        self.check_batch(batch)
        start = time.perf_counter_ns()
        logits, compute_ms = self._infer_impl(np.ascontiguousarray(batch))
        total_ms = (time.perf_counter_ns() - start) / 1e6
        self.last_timing = InferTiming(compute_ms, total_ms, int(batch.shape[0]))
        return logits

    def close(self) -> None:
        """Release the session, engine and buffers (idempotent)."""
        if self._loaded:
            self._close_impl()
            self._loaded = False

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``"onnxruntime (CPUExecutionProvider)"``."""
        return self.name

    def check_batch(self, batch: np.ndarray) -> None:
        """Validate a batch against the input spec; one-line ConfigError naming the problem."""
        spec = self.input_spec
        rank, axes = (4, "(N, C, H, W)") if spec.depth is None else (5, "(N, C, D, H, W)")
        if batch.ndim != rank:
            raise ConfigError(f"{self.name} expects a {axes} batch, got shape {tuple(batch.shape)}")
        if batch.dtype != np.float32:
            raise ConfigError(f"{self.name} expects float32 input, got {batch.dtype}")
        n, c = int(batch.shape[0]), int(batch.shape[1])
        h, w = int(batch.shape[-2]), int(batch.shape[-1])
        if c != spec.channels:
            raise ChannelMismatchError(
                f"the model takes {spec.channels} channel(s), the input has {c}"
            )
        checks = [("batch size", n, spec.batch)]
        if spec.depth is not None:
            checks.append(("patch depth", int(batch.shape[2]), spec.depth))
        checks += [("slice height", h, spec.height), ("slice width", w, spec.width)]
        for what, value, allowed in checks:
            if not allowed.contains(value):
                raise ConfigError(
                    f"{what} {value} is outside the model's allowed range {allowed} "
                    f"(min:opt:max); re-export with a range that includes it"
                )

    # -- hooks ------------------------------------------------------------------------------
    @abstractmethod
    def _load_impl(self) -> None:
        """Create the session or execution context and any buffers."""

    @abstractmethod
    def _model_io(self) -> ModelIO:
        """The loaded model's declared inputs and outputs (called right after ``_load_impl``)."""

    @abstractmethod
    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """Run one validated, C-contiguous batch; return ``(logits, compute_ms)``."""

    @abstractmethod
    def _close_impl(self) -> None:
        """Release what ``_load_impl`` created."""

    # -- context manager --------------------------------------------------------------------
    def __enter__(self) -> Backend:
        return self.load()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
