"""TensorRT backend: runs an engine that ``medseg build`` compiled on this device.

The TensorRT 10/11 I/O-tensor API only: tensors are found by name (``num_io_tensors``,
``get_tensor_name``, ``get_tensor_mode``), shapes set with ``set_input_shape``, addresses with
``set_tensor_address``, and the network launched with ``execute_async_v3`` on a CUDA stream.
Device and pinned host buffers are allocated once (for the profile's largest batch) and reused;
CUDA events time the network alone. With ``cuda_graph=True`` each input shape is run once
normally, then captured as a CUDA graph and replayed while the shape stays the same (a shape
change drops the graph; the next run at the new shape captures it again). ``tensorrt`` (or
the lean runtime ``tensorrt_lean``) and cuda-python are imported when the backend is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medseg.bundle.entries import InputSpec
from medseg.errors import BackendError
from medseg.runtime.backends.base import Backend, ModelIO

if TYPE_CHECKING:
    from medseg.bundle.engines import EngineSidecar

__all__ = ["EngineFromPath", "TensorRTBackend"]


class EngineFromPath:
    """Loader: deserialise a plan file into a ``tensorrt.ICudaEngine``.

    Version-compatible plans embed a lean runtime, which TensorRT runs only when told the plan
    is trusted (``engine_host_code_allowed``); the sidecar says whether the plan is one, and on
    which DLA core a DLA plan runs. The loader keeps the logger and runtime alive as long as
    the engine is used.
    """

    def __init__(self, path: Path, sidecar: EngineSidecar | None = None) -> None:
        self.path = Path(path)
        self.sidecar = sidecar  # given: already read and checked (check_engine); not re-read
        self.runtime: Any = None
        self.logger: Any = None

    def __call__(self) -> Any:
        from medseg.bundle.engines import EngineSidecar, sidecar_path
        from medseg.runtime.engines import tensorrt_module

        trt = tensorrt_module()
        if self.sidecar is None and sidecar_path(self.path).is_file():
            self.sidecar = EngineSidecar.load(sidecar_path(self.path))
        flags: dict[str, Any] = self.sidecar.flags if self.sidecar is not None else {}
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        if flags.get("version_compatible"):
            self.runtime.engine_host_code_allowed = True
        if flags.get("dla_core") is not None:
            self.runtime.DLA_core = int(flags["dla_core"])
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise BackendError(
                f"cannot deserialise {self.path} with TensorRT {trt.__version__} (see the TensorRT "
                "log above): rebuild it on this device with medseg build"
            )
        return engine


class TensorRTBackend(Backend):
    """Runs a TensorRT plan on ``(N, C, H, W)`` float32 batches; returns ``(N, K, H, W)`` logits.

    Args:
        engine_path: the ``.plan`` file (checked with ``medseg.runtime.engines.check_engine``),
            or a loader: a callable returning a deserialised ``ICudaEngine`` (e.g.
            :class:`EngineFromPath`, or one that deserialises bytes already in memory), or
            an ``ICudaEngine`` itself (the Polygraphy ``EngineFromBytes`` pattern).
        input_spec, output_name, num_classes: from the bundle manifest.
        cuda_graph: replay consecutive calls of one input shape as a CUDA graph (captured after
            the first run of that shape; recaptured after a shape change).
        device: CUDA device index.
    """

    name = "tensorrt"

    @classmethod
    def available(cls) -> str | None:
        """The reason TensorRT cannot run here (not installed, no NVIDIA GPU), or ``None``."""
        from medseg.errors import MedsegError
        from medseg.runtime.cuda import gpu_available

        try:
            cls._module_static()
        except MedsegError as exc:
            return str(exc)
        return None if gpu_available() else "no NVIDIA GPU visible"

    @staticmethod
    def _module_static() -> Any:
        from medseg.runtime.engines import tensorrt_module

        return tensorrt_module()

    def __init__(
        self,
        engine_path: Path | Callable[[], Any] | Any,
        input_spec: InputSpec,
        output_name: str,
        num_classes: int,
        *,
        cuda_graph: bool = False,
        device: int = 0,
    ) -> None:
        super().__init__(input_spec, output_name, num_classes)
        self.loader: Callable[[], Any]
        if isinstance(engine_path, str | Path):
            self.loader = self._make_loader(Path(engine_path))
        elif callable(engine_path):
            self.loader = engine_path
        else:  # an engine object, already deserialised
            engine = engine_path
            self.loader = lambda: engine
        path = getattr(self.loader, "path", None)
        #: the plan file, or ``None`` for an engine or loader given in memory
        self.engine_path: Path | None = Path(path) if path is not None else None
        self.cuda_graph = cuda_graph
        self.device = device
        self._description = f"{self.name} ({self.engine_path})"
        self._graphs: dict[tuple[int, ...], Any] = {}
        self._shape: tuple[int, ...] | None = None
        self.engine: Any = None
        self.context: Any = None
        self._stream: Any = None
        self._buffers: list[Any] = []  # device in/out, pinned in/out, start/end events

    @staticmethod
    def _make_loader(path: Path) -> Any:
        """The plan loader (hook for the TensorRT-RTX backend)."""
        return EngineFromPath(path)

    def describe(self) -> str:
        """E.g. ``"tensorrt 10.3.0 (Orin, sm87)"`` once loaded."""
        return self._description

    @property
    def gpu_memory_bytes(self) -> int | None:
        """Device memory of the loaded engine (activations) plus the I/O buffers, in bytes."""
        if self.engine is None:
            return None
        size = getattr(self.engine, "device_memory_size_v2", None)  # 10.1+; older: without _v2
        if size is None:
            size = self.engine.device_memory_size
        return int(size) + self._d_in.nbytes + self._d_out.nbytes

    def _module(self) -> Any:
        """The TensorRT module this backend runs with (the TensorRT-RTX backend overrides it)."""
        from medseg.runtime.engines import tensorrt_module

        return tensorrt_module()

    def _create_context(self, gpu: Any) -> Any:
        """An execution context of the loaded engine (hook for the TensorRT-RTX backend)."""
        return self.engine.create_execution_context()

    def _load_impl(self) -> None:
        from medseg.runtime import cuda

        trt = self._module()
        cuda.check(cuda.cudart().cudaSetDevice(self.device))
        gpu = cuda.gpu_info(self.device)
        self._description = f"{self.name} {trt.__version__} ({gpu.name}, {gpu.sm})"
        try:
            self._open(trt, cuda, gpu)
        except BaseException:
            self._close_impl()
            raise

    def _open(self, trt: Any, cuda: Any, gpu: Any) -> None:
        self.engine = self.loader()
        self.context = self._create_context(gpu)
        if self.context is None:
            raise BackendError(f"cannot create an execution context for {self.engine_path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self.input_spec.name] or outputs != [self.output_name]:
            raise BackendError(
                f"engine {self.engine_path} has inputs {inputs} and outputs {outputs}; the "
                f"manifest expects {[self.input_spec.name]} and {[self.output_name]}: rebuild it"
            )
        for tensor in names:
            if self.engine.get_tensor_dtype(tensor) != trt.DataType.FLOAT:
                raise BackendError(
                    f"engine tensor {tensor!r} is {self.engine.get_tensor_dtype(tensor)}, not "
                    "float32 (bundles keep FP32 I/O): rebuild the engine from this bundle"
                )
        # the base's load() compares these names and shapes with the manifest (_model_io)
        spec = self.input_spec
        spatial: tuple[int, ...] = (spec.height.opt, spec.width.opt)  # (D, H, W) in 3D
        spatial = spatial if spec.depth is None else (spec.depth.opt, *spatial)
        in_shape = (spec.batch.max, spec.channels, *spatial)
        out_shape = (spec.batch.max, self.num_classes, *spatial)
        self._stream = cuda.Stream()
        self._start, self._end = cuda.CudaEvent(), cuda.CudaEvent()
        self._buffers = [self._start, self._end]
        self._d_in = cuda.DeviceBuffer(int(np.prod(in_shape)) * 4)
        self._buffers.append(self._d_in)
        self._d_out = cuda.DeviceBuffer(int(np.prod(out_shape)) * 4)
        self._buffers.append(self._d_out)
        self._h_in = cuda.PinnedHostBuffer(in_shape, np.float32)
        self._buffers.append(self._h_in)
        self._h_out = cuda.PinnedHostBuffer(out_shape, np.float32)
        self._buffers.append(self._h_out)

    def _model_io(self) -> ModelIO:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        trt = self._module()
        shapes = {n: tuple(int(d) for d in self.engine.get_tensor_shape(n)) for n in names}
        return ModelIO(
            str(self.engine_path),
            {
                n: s
                for n, s in shapes.items()
                if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
            },
            {
                n: s
                for n, s in shapes.items()
                if self.engine.get_tensor_mode(n) != trt.TensorIOMode.INPUT
            },
        )

    def _infer_impl(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        from medseg.runtime import cuda

        shape = tuple(int(v) for v in batch.shape)
        out_shape = (shape[0], self.num_classes, *shape[2:])
        self._reserve(batch.nbytes, int(np.prod(out_shape)) * 4)
        if shape != self._shape:
            # a captured graph holds the context's state at capture time: after a shape change
            # it is recaptured (TensorRT's guidance), never replayed
            self._drop_graphs()
            if not self.context.set_input_shape(self.input_spec.name, shape):
                raise BackendError(f"engine {self.engine_path} rejected input shape {shape}")
            self._shape = shape
        got = tuple(self.context.get_tensor_shape(self.output_name))
        if got != out_shape:
            raise BackendError(f"engine output shape {got} is not the expected {out_shape}")
        self.context.set_tensor_address(self.input_spec.name, self._d_in.ptr)
        self.context.set_tensor_address(self.output_name, self._d_out.ptr)
        host_in, host_out = self._h_in.view(shape), self._h_out.view(out_shape)
        np.copyto(host_in, batch)
        self._d_in.copy_from_host_async(host_in, self._stream)
        graph = self._graphs.get(shape)
        self._start.record(self._stream)
        if graph is not None:
            graph.launch()
        else:
            self._execute()
        self._end.record(self._stream)
        self._d_out.copy_to_host_async(host_out, self._stream)
        self._stream.synchronize()
        compute_ms = cuda.elapsed_ms(self._start, self._end)
        logits = host_out.copy()
        if self.cuda_graph and graph is None:  # the run above was this shape's warm run
            self._capture(shape)
        return logits, compute_ms

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self._stream.handle):
            raise BackendError(f"TensorRT execute_async_v3 failed on {self.engine_path}")

    def _capture(self, shape: tuple[int, ...]) -> None:
        """Record one launch of the network for ``shape`` as a CUDA graph (not run now)."""
        from medseg.runtime import cuda

        graph = cuda.CudaGraph(self._stream)
        try:
            with graph.capture():
                self._execute()
        except BackendError as exc:
            graph.close()
            raise BackendError(
                f"engine {self.engine_path} cannot run as a CUDA graph ({exc}); run without "
                "cuda_graph"
            ) from exc
        self._graphs[shape] = graph

    def _reserve(self, in_bytes: int, out_bytes: int) -> None:
        """Grow the buffers for a larger H, W than planned; graphs hold old addresses: drop."""
        moved = [
            self._d_in.ensure(in_bytes),
            self._d_out.ensure(out_bytes),
            self._h_in.ensure(in_bytes),
            self._h_out.ensure(out_bytes),
        ]
        if any(moved[:2]):
            self._drop_graphs()

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            graph.close()
        self._graphs.clear()

    def _close_impl(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
        self._drop_graphs()
        for resource in self._buffers:
            resource.close()
        self._buffers = []
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.context = None  # the context goes before its engine, the engine before its runtime
        self.engine = None
        if isinstance(self.loader, EngineFromPath):
            self.loader.runtime = None
        self._shape = None
