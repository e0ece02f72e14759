"""The two runtimes ``medseg build`` compiles for, as small adapters of one builder.

What differs between TensorRT and TensorRT-RTX, and nothing else (checked against NVIDIA's
TensorRT-RTX documentation, "Porting from TensorRT" and "CPU-only AOT"):

- the module (``tensorrt`` / ``tensorrt_rtx``) and where the build may run: TensorRT needs
  the target GPU; TensorRT-RTX builds ahead of time without a GPU, for a compute-capability
  list set on the builder config (``num_compute_capabilities``, ``set_compute_capability``);
- network flags: strong typing is an opt-in flag on TensorRT 10 and the only mode on 11 and on
  TensorRT-RTX;
- builder options: TensorRT has a timing cache, version and hardware compatibility and DLA;
  TensorRT-RTX has none of them (a timing cache would query a GPU; its kernels are compiled
  at run time into a runtime cache instead, see the ``tensorrt-rtx`` backend);
- the sidecar's device fields and the ``engines/`` folder (``<gpu>-sm87`` / ``rtx-sm86-...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from medseg.bundle.engines import version_tuple
from medseg.errors import ConfigError, EngineBuildError
from medseg.runtime.cuda import GpuInfo, device_key, gpu_available, gpu_info
from medseg.runtime.engines import tensorrt_module
from medseg.runtime.engines_rtx import rtx_key, tensorrt_rtx_module

__all__ = ["RtxAdapter", "RuntimeAdapter", "TensorRTAdapter"]


@dataclass
class RuntimeAdapter:
    """What one runtime does differently; :func:`medseg.build.engine.build_engines` does the rest.

    Attributes:
        trt: the imported module; ``label``: its name for messages.
    """

    trt: ModuleType
    label: str = "TensorRT"
    runtime: str = "tensorrt"

    def key(self) -> str:
        """The ``engines/`` folder of this build."""
        raise NotImplementedError

    def describe(self) -> str:
        """The first log line: runtime, version and target."""
        raise NotImplementedError

    def network_flags(self) -> int:
        return 0

    def configure(self, config: Any, options: Any) -> None:
        """Set the runtime's builder options on ``config`` (a fresh ``IBuilderConfig``)."""
        config.builder_optimization_level = options.opt_level
        if options.workspace_bytes is not None:
            config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)

    def after_build(self, config: Any, options: Any) -> None:
        """Save what the build learnt (the timing cache of standard TensorRT)."""

    def sidecar_fields(self) -> dict[str, Any]:
        """``gpu_name``, ``compute_capability``, ``runtime``, ``compute_capabilities``."""
        raise NotImplementedError


@dataclass
class TensorRTAdapter(RuntimeAdapter):
    """Standard TensorRT 10.x / 11.x: builds on (and for) the GPU of this machine."""

    gpu: GpuInfo | None = None

    @classmethod
    def open(cls, options: Any) -> TensorRTAdapter:
        """TensorRT and this GPU, checked in that order; one-line errors otherwise."""
        trt = tensorrt_module(builder=True)
        if not gpu_available():
            raise EngineBuildError(
                "no NVIDIA GPU visible: medseg build runs on the target device (Jetson or a "
                "workstation with an NVIDIA GPU and TensorRT); --runtime tensorrt-rtx builds "
                "RTX engines on any machine"
            )
        gpu = gpu_info()
        if options.hardware_compat == "ampere+" and (
            gpu.compute_capability < (8, 0) or gpu.integrated
        ):
            raise ConfigError(
                f"--hardware-compat ampere+ needs a discrete Ampere or newer GPU (sm >= 80) to "
                f"build on; this one is {gpu.name} ({gpu.sm}{', Jetson' if gpu.integrated else ''})"
            )
        if options.dla_core is not None:
            cores = int(trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)
            if options.dla_core >= cores:
                raise EngineBuildError(
                    f"--dla-core {options.dla_core}: this device has {cores} DLA core(s) (DLA is "
                    "on Jetson AGX/NX Orin); build without --dla-core or pick an existing core"
                )
        return cls(trt, gpu=gpu)

    @property
    def _gpu(self) -> GpuInfo:
        if self.gpu is None:
            raise EngineBuildError("TensorRT adapter used before open()")
        return self.gpu

    def key(self) -> str:
        return device_key(self._gpu)

    def describe(self) -> str:
        gpu = self._gpu
        return f"TensorRT {self.trt.__version__} on {gpu.name} ({gpu.sm})"

    def network_flags(self) -> int:
        """Strong typing: opt-in flag on TensorRT 10, the only mode on 11 (flag deprecated)."""
        if version_tuple(self.trt.__version__)[0] >= 11:
            return 0
        return 1 << int(self.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    def configure(self, config: Any, options: Any) -> None:
        super().configure(config, options)
        trt = self.trt
        if options.version_compatible:
            # The plan embeds its lean runtime, so later TensorRT versions load it as it is.
            # EXCLUDE_LEAN_RUNTIME is not set: it is for plans run through a separately shipped
            # lean runtime library loaded with Runtime.load_runtime(), which medseg does not do.
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if options.hardware_compat == "ampere+":
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if options.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = options.dla_core
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        self._use_timing_cache(config, options.timing_cache)

    @staticmethod
    def _use_timing_cache(config: Any, path: Path | None) -> None:
        if path is None:
            return
        cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise EngineBuildError(
                f"timing cache {path} was written by another TensorRT version or GPU: delete it "
                "or pass another --timing-cache"
            )

    def after_build(self, config: Any, options: Any) -> None:
        from medseg.atomic import atomic_file

        if options.timing_cache is not None:
            with atomic_file(options.timing_cache) as tmp, tmp.open("wb") as f:
                f.write(config.get_timing_cache().serialize())

    def sidecar_fields(self) -> dict[str, Any]:
        gpu = self._gpu
        return {
            "gpu_name": gpu.name,
            "compute_capability": f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
            "runtime": "tensorrt",
            "compute_capabilities": (),
        }


@dataclass
class RtxAdapter(RuntimeAdapter):
    """TensorRT for RTX: ahead-of-time build without a GPU, for a compute-capability list."""

    capabilities: tuple[str, ...] = field(default=())

    @classmethod
    def open(cls, capabilities: tuple[str, ...]) -> RtxAdapter:
        """``tensorrt_rtx``, and every requested capability in its ``ComputeCapability`` enum."""
        trt = tensorrt_rtx_module()
        caps = tuple(capabilities)
        for cap in caps:
            if not hasattr(trt.ComputeCapability, _enum_name(cap)):
                raise ConfigError(
                    f"--compute-capability {cap.replace('.', '')}: TensorRT-RTX "
                    f"{trt.__version__} has no target {_enum_name(cap)}; it has "
                    f"{', '.join(m for m in trt.ComputeCapability.__members__ if m[:2] == 'SM')}"
                )
        return cls(trt, label="TensorRT-RTX", runtime="tensorrt-rtx", capabilities=caps)

    def key(self) -> str:
        return rtx_key(self.capabilities)

    def describe(self) -> str:
        sms = ", ".join(f"sm{c.replace('.', '')}" for c in self.capabilities)
        return f"TensorRT-RTX {self.trt.__version__} (ahead-of-time, no GPU needed) for {sms}"

    def configure(self, config: Any, options: Any) -> None:
        super().configure(config, options)
        config.num_compute_capabilities = len(self.capabilities)
        for index, cap in enumerate(self.capabilities):
            config.set_compute_capability(
                getattr(self.trt.ComputeCapability, _enum_name(cap)), index
            )

    def sidecar_fields(self) -> dict[str, Any]:
        return {
            "gpu_name": "",
            "compute_capability": "",
            "runtime": "tensorrt-rtx",
            "compute_capabilities": self.capabilities,
        }


def _enum_name(cap: str) -> str:
    """``"12.0"`` -> ``"SM120"`` (TensorRT-RTX's ``ComputeCapability`` member)."""
    return "SM" + cap.replace(".", "")
