"""Compile a bundle's ONNX files into TensorRT or TensorRT-RTX engines.

One engine per precision: parse the ONNX file into a strongly typed network (precision is in
the file: FP16 casts from AutoCast, INT8 Q/DQ nodes; no builder precision flags, no
calibrator), report what the parser made of it, add one optimisation profile from the
manifest's shape ranges, build, and write ``engines/<key>/<precision>.plan`` and its sidecar
atomically. One builder for both runtimes: what differs (module, where it may build, builder
options, device fields) is a small adapter in :mod:`medseg.build.runtimes`; parsing, profile
and report are :mod:`medseg.build.network`. Standard TensorRT is written to the 10.x (JetPack
6) and 11.x Python API and builds on the target GPU; TensorRT-RTX builds anywhere, no GPU.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.atomic import atomic_file, check_parent_exists
from medseg.build.network import add_profile, check_io, network_report, parse_onnx, profile_record
from medseg.build.runtimes import RtxAdapter, RuntimeAdapter, TensorRTAdapter
from medseg.bundle.manifest import PRECISIONS, Manifest, file_sha256
from medseg.errors import ConfigError, EngineBuildError
from medseg.runtime.engines import (
    HARDWARE_COMPAT,
    RUNTIMES,
    EngineSidecar,
    engine_path,
    sidecar_path,
)
from medseg.runtime.engines_rtx import ACCEPTED_CAPABILITIES, DEFAULT_CAPABILITIES
from medseg.runtime.network_report import NetworkReport

__all__ = [
    "BuildOptions",
    "BuiltEngine",
    "build_engine",
    "build_engines",
    "open_runtime",
    "parse_network",
    "parse_size",
]

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
        runtime: ``"tensorrt"`` (this device's GPU) or ``"tensorrt-rtx"`` (any machine; plans
            for RTX GPUs); version/hardware compatibility, DLA and the timing cache are
            options of standard TensorRT only.
        compute_capabilities: TensorRT-RTX targets, ``"major.minor"``; None: its defaults
            8.6, 8.9, 12.0 (see :attr:`capabilities`).
    """

    precisions: tuple[str, ...] = ("all",)
    workspace_bytes: int | None = None
    timing_cache: Path | None = None
    opt_level: int = 3
    version_compatible: bool = False
    hardware_compat: str = "none"
    dla_core: int | None = None
    runtime: str = "tensorrt"
    compute_capabilities: tuple[str, ...] | None = None

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
        self._check_runtime()

    def _check_runtime(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime {self.runtime!r} must be one of {', '.join(RUNTIMES)}")
        if self.runtime == "tensorrt":
            if self.compute_capabilities is not None:
                raise ConfigError(
                    "--compute-capability is a TensorRT-RTX option (standard TensorRT builds for "
                    "the GPU it runs on): add --runtime tensorrt-rtx, or drop it"
                )
            return
        others = [
            name
            for name, given in (
                ("--dla-core", self.dla_core is not None),
                ("--version-compatible", self.version_compatible),
                ("--hardware-compat", self.hardware_compat != "none"),
                ("--timing-cache", self.timing_cache is not None),
            )
            if given
        ]
        if others:
            raise ConfigError(
                f"{', '.join(others)}: option(s) of the standard TensorRT runtime, not of "
                "--runtime tensorrt-rtx (TensorRT-RTX has no DLA, no version or hardware "
                "compatibility, and no timing cache: its plans target a --compute-capability "
                "list and run on that exact TensorRT-RTX version)"
            )
        caps = self.compute_capabilities
        if caps is not None:
            bad = [c for c in caps if c not in ACCEPTED_CAPABILITIES]
            if not caps or bad or len(set(caps)) != len(caps):
                raise ConfigError(
                    f"--compute-capability {','.join(caps)!r} must be a comma list without "
                    f"repeats of {', '.join(c.replace('.', '') for c in ACCEPTED_CAPABILITIES)}"
                )

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The TensorRT-RTX targets, sorted; () for standard TensorRT."""
        if self.runtime != "tensorrt-rtx":
            return ()
        caps = self.compute_capabilities or DEFAULT_CAPABILITIES
        return tuple(sorted(caps, key=lambda c: tuple(int(v) for v in c.split("."))))

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
    """One engine written by :func:`build_engine`: plan and sidecar paths, size, build time,
    and the network report of its ONNX file (also in the sidecar)."""

    precision: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    build_seconds: float
    sidecar: EngineSidecar

    @property
    def network(self) -> NetworkReport | None:
        return self.sidecar.network


def _quiet(line: str) -> None:
    """The default ``log``: say nothing."""


def open_runtime(options: BuildOptions) -> RuntimeAdapter:
    """The adapter of ``options.runtime``, its module imported and its environment checked."""
    if options.runtime == "tensorrt-rtx":
        return RtxAdapter.open(options.capabilities)
    return TensorRTAdapter.open(options)


def build_engines(
    bundle: Path, options: BuildOptions, log: Callable[[str], None] = _quiet
) -> list[BuiltEngine]:
    """Build every requested precision of ``bundle`` with ``options.runtime``.

    Options and bundle files are checked first, then the runtime (module, GPU for standard
    TensorRT); nothing is written unless all are fine. ``log`` gets one line per step: the
    runtime, then per precision the network report, any warning of it, and the plan written.
    """
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    precisions = options.resolve(manifest, bundle)
    sources = {p: manifest.onnx_path(bundle, p, verify=True) for p in precisions}
    if options.timing_cache is not None:
        check_parent_exists(options.timing_cache)
    adapter = open_runtime(options)
    key = adapter.key()
    log(f"{adapter.describe()}: engines go to engines/{key}/")
    built = []
    for precision in precisions:
        log(f"building {precision} from {sources[precision].name}...")
        result = build_engine(
            sources[precision],
            manifest,
            precision,
            options,
            engine_path(bundle, key, precision),
            adapter=adapter,
        )
        if result.network is not None:
            log(f"  network {precision}: {result.network.summary()}")
            for warning in result.network.warnings:
                log(f"[yellow]![/] {warning}")
        log(f"[green]✓[/] {precision}: {result.path} ({result.build_seconds:.1f} s)")
        built.append(result)
    return built


def parse_network(
    adapter: RuntimeAdapter, onnx_path: Path, manifest: Manifest, precision: str
) -> tuple[Any, Any, Any, Any, NetworkReport]:
    """Parse one ONNX file with the adapter's runtime: ``(builder, network, parser, logger,
    report)``; the parser must stay alive until the build ends."""
    trt = adapter.trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(adapter.network_flags())
    parser = parse_onnx(trt, network, logger, Path(onnx_path), adapter.label)
    check_io(network, manifest, Path(onnx_path))
    report = network_report(trt, network, precision, Path(onnx_path).name)
    return builder, network, parser, logger, report


def build_engine(
    onnx_path: Path,
    manifest: Manifest,
    precision: str,
    options: BuildOptions,
    out_path: Path,
    adapter: RuntimeAdapter | None = None,
) -> BuiltEngine:
    """Compile one ONNX file into ``out_path`` (a ``.plan``) and write its sidecar beside it.

    ``adapter``: an opened runtime (:func:`open_runtime`); None opens ``options.runtime``.
    """
    adapter = adapter or open_runtime(options)
    started = time.perf_counter()
    source_sha = file_sha256(Path(onnx_path))
    if source_sha != manifest.precisions[precision].sha256:
        raise ConfigError(
            f"{onnx_path} does not match the {precision} sha256 in the manifest (truncated, "
            "tampered or from another export): re-export the bundle"
        )
    builder, network, _parser, _logger, report = parse_network(
        adapter, onnx_path, manifest, precision
    )
    config = builder.create_builder_config()
    adapter.configure(config, options)
    add_profile(builder, config, manifest.input)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(
            f"{adapter.label} could not build the {precision} engine from {onnx_path} (see the "
            f"{adapter.label} log above)"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out_path) as tmp:
        with tmp.open("wb") as f:
            f.write(plan)
        engine_sha = file_sha256(tmp)
    adapter.after_build(config, options)
    seconds = time.perf_counter() - started
    sidecar = EngineSidecar(
        tensorrt_version=str(adapter.trt.__version__),
        device_key=out_path.parent.name,
        precision=precision,
        flags=options.flags(),
        source_onnx=Path(onnx_path).name,
        source_onnx_sha256=source_sha,
        engine_sha256=engine_sha,
        profile=profile_record(manifest.input),
        build_seconds=round(seconds, 3),
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        medseg_version=__version__,
        network=report,
        **adapter.sidecar_fields(),
    )
    side = sidecar.save(sidecar_path(out_path))
    return BuiltEngine(precision, out_path, side, out_path.stat().st_size, seconds, sidecar)
