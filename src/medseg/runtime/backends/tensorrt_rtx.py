"""TensorRT-RTX backend: runs a plan that ``medseg build --runtime tensorrt-rtx`` compiled.

The same I/O-tensor API, cuda-python buffers, stream, CUDA events and optional CUDA graphs as
the TensorRT backend (it subclasses it); what differs (NVIDIA, TensorRT-RTX "Porting from
TensorRT", "Working with Runtime Cache"): the module is ``tensorrt_rtx``; the execution context
is created from an ``IRuntimeConfig`` (``engine.create_runtime_config()``) carrying a runtime
cache, because TensorRT-RTX compiles its kernels for this GPU when the context is created.
The cache lives beside the plan, one file per GPU model (``int8.sm89.runtime-cache``): read
when it exists (a cache from another TensorRT-RTX, driver or GPU is rejected by TensorRT-RTX
and rebuilt), written atomically when the backend closes, so the next start skips the
compilation. ``tensorrt_rtx`` and cuda-python are imported when the backend is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medseg.atomic import atomic_file
from medseg.errors import EngineBuildError
from medseg.runtime.backends.tensorrt import TensorRTBackend

__all__ = ["RtxEngineFromPath", "TensorRTRTXBackend"]


class RtxEngineFromPath:
    """Loader: deserialise a TensorRT-RTX plan file (keeps logger and runtime alive)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.runtime: Any = None
        self.logger: Any = None

    def __call__(self) -> Any:
        from medseg.runtime.engines_rtx import tensorrt_rtx_module

        trt = tensorrt_rtx_module()
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise EngineBuildError(
                f"cannot deserialise {self.path} with TensorRT-RTX {trt.__version__} (see the "
                "TensorRT-RTX log above): rebuild it with medseg build --runtime tensorrt-rtx"
            )
        return engine


class TensorRTRTXBackend(TensorRTBackend):
    """Runs a TensorRT-RTX plan on ``(N, C, H, W)`` float32 batches; ``(N, K, H, W)`` logits.

    Args:
        engine_path: the ``.plan`` (checked with ``medseg.runtime.engines_rtx.check_rtx_engine``).
        input_spec, output_name, num_classes: from the bundle manifest.
        cuda_graph: as for the TensorRT backend.
        runtime_cache: keep compiled kernels in a file beside the plan (read at load, written
            at close).
        device: CUDA device index.
    """

    name = "tensorrt-rtx"

    def __init__(self, *args: Any, runtime_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime_cache = runtime_cache
        self.cache_path: Path | None = None
        self._runtime_config: Any = None

    @staticmethod
    def _module_static() -> Any:
        from medseg.runtime.engines_rtx import tensorrt_rtx_module

        return tensorrt_rtx_module()

    @staticmethod
    def _make_loader(path: Path) -> Any:
        return RtxEngineFromPath(path)

    def _module(self) -> Any:
        from medseg.runtime.engines_rtx import tensorrt_rtx_module

        return tensorrt_rtx_module()

    def _create_context(self, gpu: Any) -> Any:
        from medseg.runtime.engines_rtx import runtime_cache_path

        config = self.engine.create_runtime_config()
        if self.runtime_cache and self.engine_path is not None:  # none for an in-memory engine
            self.cache_path = runtime_cache_path(self.engine_path, gpu)
            cache = config.create_runtime_cache()
            if self.cache_path.is_file():
                # False: written by another TensorRT-RTX / driver / GPU; it is rebuilt and
                # replaced at close
                cache.deserialize(self.cache_path.read_bytes())
            config.set_runtime_cache(cache)
        self._runtime_config = config  # the cache must outlive the context
        return self.engine.create_execution_context(config)

    def _save_cache(self) -> None:
        if self._runtime_config is None or self.cache_path is None:
            return
        cache = self._runtime_config.get_runtime_cache()
        if cache is None:
            return
        blob = cache.serialize()
        with atomic_file(self.cache_path) as tmp, tmp.open("wb") as f:
            f.write(memoryview(blob))

    def _close_impl(self) -> None:
        try:
            if self.context is not None:
                self._save_cache()
        finally:
            super()._close_impl()
            self._runtime_config = None
