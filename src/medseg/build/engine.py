"""Compile a bundle's ONNX files into TensorRT engines on this device.

One engine per precision: parse the ONNX file into a strongly typed network (precision is in
the file: FP16 casts from AutoCast, INT8 Q/DQ nodes; no builder precision flags, no
calibrator), add one optimisation profile from the manifest's shape ranges, build, and write
``engines/<device-key>/<precision>.plan`` and its sidecar atomically. Written to the
TensorRT 10.x (JetPack 6) and 11.x Python API; the one difference handled is that strong
typing is an opt-in network flag on 10.x and the only mode on 11.x (the flag is deprecated).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from medseg import __version__
from medseg.atomic import atomic_file, check_parent_exists
from medseg.bundle.manifest import PRECISIONS, Manifest, file_sha256
from medseg.errors import ConfigError, EngineBuildError
from medseg.runtime.cuda import GpuInfo, device_key, gpu_available, gpu_info
from medseg.runtime.engines import (
    HARDWARE_COMPAT,
    EngineSidecar,
    engine_path,
    sidecar_path,
    tensorrt_module,
    version_tuple,
)

__all__ = ["BuildOptions", "BuiltEngine", "build_engine", "build_engines", "parse_size"]

#: Size suffixes: K/M/G and KiB/MiB/GiB are binary (as in trtexec), KB/MB/GB decimal.
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "kb": 10**3,
    "m": 1 << 20,
    "mib": 1 << 20,
    "mb": 10**6,
    "g": 1 << 30,
    "gib": 1 << 30,
    "gb": 10**9,
}


def parse_size(text: str) -> int:
    """Bytes in ``"4GiB"``, ``"512MiB"``, ``"1G"`` (binary), ``"2GB"`` (decimal), ``"1048576"``.

    Raises:
        ConfigError: not a positive size (the message lists the accepted units).
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = _UNITS.get(match.group(2).lower()) if match else None
    value = int(float(match.group(1)) * unit) if match and unit else 0
    if value < 1:
        raise ConfigError(
            f"size {text!r} is not a positive size: use bytes or a number with K, M, G, KiB, "
            "MiB, GiB (binary) or KB, MB, GB (decimal), e.g. 4GiB"
        )
    return value


@dataclass(frozen=True)
class BuildOptions:
    """What ``medseg build`` was asked for.

    Attributes:
        precisions: ``("all",)`` (every precision of the bundle) or some of fp32, fp16, int8.
        workspace_bytes: cap on TensorRT's workspace memory pool; None: TensorRT's default
            (the device memory).
        timing_cache: file of kernel timings read before and written after each build (makes
            rebuilds fast); None: no persistent cache.
        opt_level: ``builder_optimization_level`` 0-5 (higher: longer build, faster engine).
        version_compatible: the plan embeds a lean runtime and runs on later TensorRT versions
            (may be slower).
        hardware_compat: ``"none"`` (this GPU model) or ``"ampere+"`` (any sm >= 8.0 GPU; not
            on Jetson).
        dla_core: run on this DLA core of a Jetson, layers DLA cannot run falling back to GPU.
    """

    precisions: tuple[str, ...] = ("all",)
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    opt_level: int = 3
    version_compatible: bool = False
    hardware_compat: str = "none"
    dla_core: int | None = None

    def __post_init__(self) -> None:
        accepted = ("all", *PRECISIONS)
        bad = [p for p in self.precisions if p not in accepted]
        if not self.precisions or bad or len(set(self.precisions)) != len(self.precisions):
            raise ConfigError(
                f"--precision {','.join(self.precisions)!r} must be 'all' or a comma list of "
                f"{', '.join(PRECISIONS)} without repeats"
            )
        if "all" in self.precisions and len(self.precisions) > 1:
            raise ConfigError("--precision all cannot be combined with named precisions")
        if self.workspace_bytes is not None and self.workspace_bytes < 1:
            raise ConfigError(f"--workspace {self.workspace_bytes} must be a positive size")
        if isinstance(self.opt_level, bool) or self.opt_level not in range(6):
            raise ConfigError(f"--opt-level {self.opt_level} must be an integer from 0 to 5")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(
                f"--hardware-compat {self.hardware_compat!r} must be one of "
                f"{', '.join(HARDWARE_COMPAT)}"
            )
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core {self.dla_core} must be >= 0")
        if self.dla_core is not None and self.hardware_compat != "none":
            raise ConfigError(
                "--dla-core and --hardware-compat ampere+ exclude each other: DLA exists on "
                "Jetson, where TensorRT has no hardware compatibility"
            )

    def resolve(self, manifest: Manifest, bundle: Path) -> list[str]:
        """The precisions to build, in fp32, fp16, int8 order; ConfigError if one is missing."""
        if self.precisions == ("all",):
            return [p for p in PRECISIONS if p in manifest.precisions]
        missing = [p for p in self.precisions if p not in manifest.precisions]
        if missing:
            raise ConfigError(
                f"bundle {bundle} has no {', '.join(missing)} model (it has "
                f"{', '.join(sorted(manifest.precisions))}); re-export it with --fp16 / --int8"
            )
        return [p for p in PRECISIONS if p in self.precisions]

    def flags(self) -> dict[str, Any]:
        """The sidecar's record of these options."""
        return {
            "opt_level": self.opt_level,
            "workspace_bytes": self.workspace_bytes,
            "version_compatible": self.version_compatible,
            "hardware_compat": self.hardware_compat,
            "dla_core": self.dla_core,
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "strongly_typed": True,
        }


@dataclass(frozen=True)
class BuiltEngine:
    """One engine written by :func:`build_engine`: plan and sidecar paths, size, build time."""

    precision: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    build_seconds: float
    sidecar: EngineSidecar


def _quiet(line: str) -> None:
    """The default ``log``: say nothing."""


def _environment(options: BuildOptions) -> tuple[ModuleType, GpuInfo]:
    """The full TensorRT and this GPU, checked in that order; one-line errors otherwise."""
    trt = tensorrt_module(builder=True)
    if not gpu_available():
        raise EngineBuildError(
            "no NVIDIA GPU visible: medseg build runs on the target device (Jetson or a "
            "workstation with an NVIDIA GPU and TensorRT)"
        )
    gpu = gpu_info()
    if options.hardware_compat == "ampere+" and (gpu.compute_capability < (8, 0) or gpu.integrated):
        raise ConfigError(
            f"--hardware-compat ampere+ needs a discrete Ampere or newer GPU (sm >= 80) to build "
            f"on; this one is {gpu.name} ({gpu.sm}{', Jetson' if gpu.integrated else ''})"
        )
    if options.dla_core is not None:
        cores = int(trt.Builder(trt.Logger(trt.Logger.WARNING)).num_DLA_cores)
        if options.dla_core >= cores:
            raise EngineBuildError(
                f"--dla-core {options.dla_core}: this device has {cores} DLA core(s) (DLA is on "
                "Jetson AGX/NX Orin); build without --dla-core or pick an existing core"
            )
    return trt, gpu


def build_engines(
    bundle: Path, options: BuildOptions, log: Callable[[str], None] = _quiet
) -> list[BuiltEngine]:
    """Build every requested precision of ``bundle`` for this device.

    Options and bundle files are checked first, then TensorRT, then the GPU; nothing is written
    unless all three are fine.
    """
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    precisions = options.resolve(manifest, bundle)
    sources = {p: manifest.onnx_path(bundle, p, verify=True) for p in precisions}
    if options.timing_cache is not None:
        check_parent_exists(options.timing_cache)
    trt, gpu = _environment(options)
    key = device_key(gpu)
    log(f"TensorRT {trt.__version__} on {gpu.name} ({gpu.sm}): engines go to engines/{key}/")
    built = []
    for precision in precisions:
        log(f"building {precision} from {sources[precision].name}...")
        result = build_engine(
            sources[precision], manifest, precision, options, engine_path(bundle, key, precision)
        )
        log(f"✓ {precision}: {result.path} ({result.build_seconds:.1f} s)")
        built.append(result)
    return built


def _network_flags(trt: ModuleType) -> int:
    """Strong typing: opt-in flag on TensorRT 10, the only mode on 11 (flag deprecated there)."""
    if version_tuple(trt.__version__)[0] >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _parse(trt: ModuleType, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    native = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)
    if native is not None:  # TensorRT's own InstanceNorm layer, needed by compatible builds
        parser.set_flag(native)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [" ".join(str(parser.get_error(i)).split()) for i in range(parser.num_errors)]
        raise EngineBuildError(
            f"TensorRT cannot parse {onnx_path}: {'; '.join(errors) or 'no parser error given'}"
        )
    return parser


def _configure(trt: ModuleType, config: Any, options: BuildOptions) -> None:
    config.builder_optimization_level = options.opt_level
    if options.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
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


def _use_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise EngineBuildError(
            f"timing cache {path} was written by another TensorRT version or GPU: delete it or "
            "pass another --timing-cache"
        )


def build_engine(
    onnx_path: Path, manifest: Manifest, precision: str, options: BuildOptions, out_path: Path
) -> BuiltEngine:
    """Compile one ONNX file into ``out_path`` (a ``.plan``) and write its sidecar beside it."""
    trt, gpu = _environment(options)
    started = time.perf_counter()
    source_sha = file_sha256(Path(onnx_path))
    if source_sha != manifest.precisions[precision].sha256:
        raise ConfigError(
            f"{onnx_path} does not match the {precision} sha256 in the manifest (truncated, "
            "tampered or from another export): re-export the bundle"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    _parser = _parse(trt, network, logger, Path(onnx_path))  # keep alive until the build ends
    spec = manifest.input
    names = (
        [network.get_input(i).name for i in range(network.num_inputs)],
        [network.get_output(i).name for i in range(network.num_outputs)],
    )
    if names != ([spec.name], [manifest.output_name]):
        raise EngineBuildError(
            f"{onnx_path} has inputs/outputs {names[0]}/{names[1]}; the manifest says "
            f"[{spec.name!r}]/[{manifest.output_name!r}]: re-export the bundle"
        )
    config = builder.create_builder_config()
    _configure(trt, config, options)
    profile = builder.create_optimization_profile()
    shapes = [
        (getattr(spec.batch, k), spec.channels, getattr(spec.height, k), getattr(spec.width, k))
        for k in ("min", "opt", "max")
    ]
    profile.set_shape(spec.name, *shapes)
    config.add_optimization_profile(profile)
    _use_timing_cache(config, options.timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"TensorRT could not build the {precision} engine from {onnx_path} (see the TensorRT "
            "log above)"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as tmp:
        with tmp.open("wb") as f:
            f.write(plan)
        engine_sha = file_sha256(tmp)
    if options.timing_cache is not None:
        with atomic_file(options.timing_cache) as tmp, tmp.open("wb") as f:
            f.write(config.get_timing_cache().serialize())
    seconds = time.perf_counter() - started
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu.name,
        compute_capability=f"{gpu.compute_capability[0]}.{gpu.compute_capability[1]}",
        device_key=out_path.parent.name,
        precision=precision,
        flags=options.flags(),
        source_onnx=Path(onnx_path).name,
        source_onnx_sha256=source_sha,
        engine_sha256=engine_sha,
        profile={
            axis: {"min": r.min, "opt": r.opt, "max": r.max}
            for axis, r in (("batch", spec.batch), ("height", spec.height), ("width", spec.width))
        },
        build_seconds=round(seconds, 3),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        medseg_version=__version__,
    )
    side = sidecar.save(sidecar_path(out_path))
    return BuiltEngine(precision, out_path, side, out_path.stat().st_size, seconds, sidecar)
