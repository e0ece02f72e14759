"""A thin layer over cuda-python's runtime API: device facts, streams, buffers, events, graphs.

Everything the TensorRT backend needs from CUDA, and nothing more. cuda-python is imported on
first use (``cuda.bindings.runtime``; cuda-python < 12.6 spells it ``cuda.cudart``), so
importing this module costs nothing and works on machines without a GPU. Every call goes
through :func:`check`, which turns cuda-python's ``(cudaError_t, *values)`` tuples into values
or a one-line :class:`~medseg.errors.BackendError` naming the CUDA error (a runtime failure,
not a build error).

Buffers are allocated once and reused: :meth:`DeviceBuffer.ensure` and
:meth:`PinnedHostBuffer.ensure` reallocate only when asked for more bytes than they hold.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

import numpy as np

from medseg.deps import require
from medseg.errors import BackendError

__all__ = [
    "CudaEvent",
    "CudaGraph",
    "DeviceBuffer",
    "GpuInfo",
    "PinnedHostBuffer",
    "Stream",
    "check",
    "cudart",
    "device_key",
    "elapsed_ms",
    "gpu_available",
    "gpu_info",
]


def cudart() -> ModuleType:
    """cuda-python's runtime module (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return require("cuda.bindings.runtime", "GPU memory and streams")  # raises, naming the extra


def check(result: Any) -> Any:
    """The value(s) of a cuda-python call, or :class:`BackendError` naming the CUDA error.

    ``(err,)`` -> ``None``; ``(err, value)`` -> ``value``; ``(err, a, b)`` -> ``(a, b)``.
    """
    rt = cudart()
    err, values = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
    if err != rt.cudaError_t.cudaSuccess:
        name = getattr(err, "name", str(err))
        raise BackendError(f"CUDA call failed: {name} ({int(err)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_available() -> bool:
    """True when cuda-python, an NVIDIA driver and at least one GPU are usable. Never raises."""
    try:
        return int(check(cudart().cudaGetDeviceCount())) > 0
    except Exception:  # any failure to reach a driver or device means "no GPU" here
        return False


def _version_text(value: int) -> str:
    """CUDA's integer versions (12060) as text ("12.6")."""
    return f"{value // 1000}.{(value % 1000) // 10}"


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the runtime sees it.

    Attributes:
        name: device name, e.g. ``"NVIDIA H100 80GB HBM3"`` or ``"Orin"``.
        compute_capability: ``(major, minor)``, e.g. ``(8, 7)`` on Jetson Orin.
        total_memory_bytes: device memory in bytes.
        driver_version: CUDA version the driver supports, e.g. ``"12.6"``.
        runtime_version: CUDA runtime version cuda-python was built with, e.g. ``"12.6"``.
        integrated: True on Jetson (memory shared with the CPU).
    """

    name: str
    compute_capability: tuple[int, int]
    total_memory_bytes: int
    driver_version: str
    runtime_version: str
    integrated: bool = False

    @property
    def sm(self) -> str:
        """``"sm87"``."""
        return f"sm{self.compute_capability[0]}{self.compute_capability[1]}"


def gpu_info(device: int = 0) -> GpuInfo:
    """Facts about GPU ``device``; :class:`BackendError` when there is none."""
    rt = cudart()
    if not gpu_available():
        raise BackendError("no NVIDIA GPU visible (no driver, or no device)")
    count = int(check(rt.cudaGetDeviceCount()))
    if not 0 <= device < count:
        raise BackendError(f"GPU {device} does not exist; this machine has {count} GPU(s)")
    prop = check(rt.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(
        name=name.split("\x00")[0].strip(),
        compute_capability=(int(prop.major), int(prop.minor)),
        total_memory_bytes=int(prop.totalGlobalMem),
        driver_version=_version_text(int(check(rt.cudaDriverGetVersion()))),
        runtime_version=_version_text(int(check(rt.cudaRuntimeGetVersion()))),
        integrated=bool(prop.integrated),
    )


def device_key(info: GpuInfo) -> str:
    """Folder name of a GPU's engines: ``"nvidia-h100-80gb-hbm3-sm90"``, ``"orin-sm87"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", info.name.lower()).strip("-") or "gpu"
    return f"{slug}-{info.sm}"


class Stream:
    """A non-blocking CUDA stream; context manager. ``handle`` is what TensorRT takes."""

    def __init__(self) -> None:
        rt = cudart()
        self._stream: Any = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking))

    @property
    def raw(self) -> Any:
        """The ``cudaStream_t``."""
        return self._stream

    @property
    def handle(self) -> int:
        """The stream as an integer address (``execute_async_v3`` takes this)."""
        return int(self._stream)

    def synchronize(self) -> None:
        """Block until all work queued on the stream has finished."""
        check(cudart().cudaStreamSynchronize(self._stream))

    def close(self) -> None:
        if self._stream is not None:
            check(cudart().cudaStreamDestroy(self._stream))
            self._stream = None

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class DeviceBuffer:
    """``nbytes`` of GPU memory (``cudaMalloc``). ``ptr`` is the device address."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = 0
        self.ptr = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> bool:
        """Hold at least ``nbytes`` bytes; reallocate (contents lost) only when bigger.

        Returns True when the buffer moved (its ``ptr`` changed).
        """
        if nbytes <= self.nbytes:
            return False
        self.close()
        self.ptr = int(check(cudart().cudaMalloc(nbytes)))
        self.nbytes = nbytes
        return True

    def copy_from_host_async(self, host: np.ndarray, stream: Stream) -> None:
        """Queue a host -> device copy of ``host`` (C-contiguous) on ``stream``."""
        self._check_fits(host)
        kind = cudart().cudaMemcpyKind.cudaMemcpyHostToDevice
        check(cudart().cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, kind, stream.raw))

    def copy_to_host_async(self, host: np.ndarray, stream: Stream) -> None:
        """Queue a device -> host copy into ``host`` (C-contiguous, writable) on ``stream``."""
        self._check_fits(host)
        kind = cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(cudart().cudaMemcpyAsync(host.ctypes.data, self.ptr, host.nbytes, kind, stream.raw))

    def _check_fits(self, host: np.ndarray) -> None:
        if not host.flags.c_contiguous or host.nbytes > self.nbytes:
            raise BackendError(
                f"host array of {host.nbytes} bytes (contiguous: {host.flags.c_contiguous}) does "
                f"not fit a device buffer of {self.nbytes} bytes"
            )

    def close(self) -> None:
        """Free the memory (idempotent)."""
        if self.ptr:
            check(cudart().cudaFree(self.ptr))
        self.ptr, self.nbytes = 0, 0


class PinnedHostBuffer:
    """Page-locked host memory (``cudaMallocHost``) seen as a numpy array of ``shape``, ``dtype``.

    Copies between pinned memory and the GPU run asynchronously at full bus speed.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any = np.float32) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = 0
        self.ptr = 0
        self._bytes = np.empty(0, np.uint8)
        self.ensure(math.prod(self.shape) * self.dtype.itemsize)

    @property
    def array(self) -> np.ndarray:
        """The buffer as an array of the ``shape`` it was created with."""
        return self.view(self.shape)

    def ensure(self, nbytes: int) -> bool:
        """Hold at least ``nbytes``; reallocate (contents lost) only when bigger. True if moved."""
        if nbytes <= self.nbytes:
            return False
        self.close()
        self.ptr = int(check(cudart().cudaMallocHost(nbytes)))
        self.nbytes = nbytes
        pointer = ctypes.cast(self.ptr, ctypes.POINTER(ctypes.c_uint8))
        self._bytes = np.ctypeslib.as_array(pointer, (nbytes,))
        return True

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first ``prod(shape)`` elements as a C-contiguous array of ``shape`` (no copy)."""
        count = math.prod(shape) * self.dtype.itemsize
        if count > self.nbytes:
            raise BackendError(f"shape {shape} needs {count} bytes; the buffer has {self.nbytes}")
        return self._bytes[:count].view(self.dtype).reshape(shape)

    def close(self) -> None:
        """Free the memory (idempotent); arrays viewing it must not be used afterwards."""
        self._bytes = np.empty(0, np.uint8)
        if self.ptr:
            check(cudart().cudaFreeHost(self.ptr))
        self.ptr, self.nbytes = 0, 0


class CudaEvent:
    """A CUDA event: record it on a stream; two of them time the work between (see elapsed_ms)."""

    def __init__(self) -> None:
        self._event: Any = check(cudart().cudaEventCreate())

    def record(self, stream: Stream) -> None:
        check(cudart().cudaEventRecord(self._event, stream.raw))

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self._event))

    def close(self) -> None:
        if self._event is not None:
            check(cudart().cudaEventDestroy(self._event))
            self._event = None


def elapsed_ms(start: CudaEvent, end: CudaEvent) -> float:
    """Milliseconds of GPU time between two recorded events (waits for ``end``)."""
    end.synchronize()
    return float(check(cudart().cudaEventElapsedTime(start._event, end._event)))


class CudaGraph:
    """Work captured from a stream once, replayed with one launch (``cudaGraphLaunch``).

    Use::

        graph = CudaGraph(stream)
        with graph.capture():
            context.execute_async_v3(stream.handle)  # recorded, not run
        graph.launch()  # runs it

    A graph replays fixed kernels, shapes and addresses: capture again when any of them change.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._graph: Any = None
        self._exec: Any = None

    @contextmanager
    def capture(self) -> Iterator[None]:
        """Record the work queued on the stream inside the block; instantiate it on exit."""
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        check(rt.cudaStreamBeginCapture(self.stream.raw, mode))
        try:
            yield
        except BaseException:
            graph = rt.cudaStreamEndCapture(self.stream.raw)[1:]  # leave capture mode first
            if graph and graph[0] is not None:
                rt.cudaGraphDestroy(graph[0])
            raise
        self._graph = check(rt.cudaStreamEndCapture(self.stream.raw))
        self._exec = check(rt.cudaGraphInstantiate(self._graph, 0))

    def launch(self) -> None:
        """Queue one replay of the captured work on the stream."""
        if self._exec is None:
            raise BackendError("CUDA graph launched before it was captured")
        check(cudart().cudaGraphLaunch(self._exec, self.stream.raw))

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            check(rt.cudaGraphExecDestroy(self._exec))
        if self._graph is not None:
            check(rt.cudaGraphDestroy(self._graph))
        self._exec = self._graph = None
