"""Compile a bundle's ONNX files into TensorRT or TensorRT-RTX engines.

One engine per precision (a fold ensemble: per fold and precision, in
``fold_<k>/engines/<key>/``, each fold built as a one-model bundle): parse the ONNX file into a
strongly typed network (precision is in the file: FP16 casts from AutoCast, INT8 Q/DQ nodes; no
builder precision flags, no calibrator), report what the parser made of it, add one optimisation
profile from the manifest's shape ranges, build, and write ``engines/<key>/<precision>.plan``
and its sidecar atomically. One builder for both runtimes: what differs (module, where it may
build, builder options, device fields) is a small adapter in :mod:`medseg.build.runtimes`;
parsing, profile and report are :mod:`medseg.build.network`. Standard TensorRT is written to the
10.x (JetPack 6) and 11.x Python API and builds on the target GPU; TensorRT-RTX builds anywhere,
no GPU.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg import __version__
from medseg.atomic import atomic_file, check_parent_exists
from medseg.build.network import add_profile, check_io, network_report, parse_onnx, profile_record
from medseg.build.options import BuildOptions, parse_size
from medseg.build.runtimes import RtxAdapter, RuntimeAdapter, TensorRTAdapter
from medseg.bundle.engines import EngineSidecar, engine_path, sidecar_path
from medseg.bundle.entries import file_sha256, fold_dir
from medseg.bundle.folds import SINGLE_MODEL, fold_bundles
from medseg.bundle.manifest import Manifest
from medseg.bundle.network_report import NetworkReport
from medseg.errors import ConfigError, EngineBuildError
from medseg.events import Event, EventSink, ignore

__all__ = [
    "BuildOptions",
    "BuiltEngine",
    "build_engine",
    "build_engines",
    "check_onnx_builds",
    "compile_plan",
    "open_runtime",
    "parse_network",
    "parse_size",
]


@dataclass(frozen=True)
class BuiltEngine:
    """One engine written by :func:`build_engine`: plan and sidecar paths, size, build time,
    the network report of its ONNX file (also in the sidecar), and its fold (``None``: the
    bundle's one model)."""

    precision: str
    path: Path
    sidecar_path: Path
    size_bytes: int
    build_seconds: float
    sidecar: EngineSidecar
    fold: str | None = None

    @property
    def network(self) -> NetworkReport | None:
        return self.sidecar.network


def open_runtime(options: BuildOptions) -> RuntimeAdapter:
    """The adapter of ``options.runtime``, its module imported and its environment checked."""
    if options.runtime == "tensorrt-rtx":
        return RtxAdapter.open(options.capabilities)
    return TensorRTAdapter.open(options)


def build_engines(
    bundle: Path, options: BuildOptions, on_event: EventSink = ignore
) -> list[BuiltEngine]:
    """Build every requested precision of ``bundle`` with ``options.runtime``.

    Options and bundle files are checked first, then the runtime (module, GPU for standard
    TensorRT); nothing is written unless all are fine. ``on_event`` gets the runtime
    (``info``), then per precision a ``start``, the network report (``info``, ``data``: the
    report), its warnings, and the plan written (``done``, ``data``: path, seconds).
    """
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    precisions = options.resolve(manifest, bundle)
    parts = fold_bundles(manifest, bundle)  # one model, or each fold as a one-model bundle
    sources = {
        (fold, p): part.onnx_path(folder, p, verify=True)
        for fold, (folder, part) in parts.items()
        for p in precisions
    }
    if options.timing_cache is not None:
        check_parent_exists(options.timing_cache)
    adapter = open_runtime(options)
    key = adapter.key()
    on_event(
        Event("build", "info", f"{adapter.describe()}: engines go to engines/{key}/", {"key": key})
    )
    built = []
    for precision, (fold, (folder, part)) in itertools.product(precisions, parts.items()):
        single = fold == SINGLE_MODEL
        step = f"build.{precision}" if single else f"build.{fold_dir(fold)}.{precision}"
        source = sources[(fold, precision)]
        what = str(source.relative_to(bundle))
        on_event(Event(step, "start", f"building {precision} from {what}..."))
        result = build_engine(
            source,
            part,
            precision,
            options,
            engine_path(folder, key, precision),
            adapter=adapter,
            fold=None if single else fold,
        )
        if result.network is not None:
            name = precision if single else f"fold {fold} {precision}"
            summary = f"network {name}: {result.network.summary()}"
            on_event(Event(step, "info", summary, {"network": result.network.to_dict()}))
            for warning in result.network.warnings:
                on_event(Event(step, "warning", warning))
        on_event(
            Event(
                step,
                "done",
                f"{precision if single else f'fold {fold} {precision}'}: {result.path} "
                f"({result.build_seconds:.1f} s)",
                {"file": str(result.path), "seconds": result.build_seconds},
            )
        )
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


def compile_plan(
    adapter: RuntimeAdapter,
    onnx_path: Path,
    manifest: Manifest,
    precision: str,
    options: BuildOptions,
) -> tuple[bytes, NetworkReport, Any]:
    """Parse, report and build one ONNX file in memory: ``(plan, report, builder config)``.

    Raises:
        EngineBuildError: a node the parser refused (named), I/O names that differ from the
            manifest, or a failed build.
    """
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
    return bytes(memoryview(plan)), report, config


def check_onnx_builds(
    folder: Path,
    manifest: Manifest,
    on_event: EventSink = ignore,
    options: BuildOptions | None = None,
) -> dict[str, NetworkReport]:
    """Build every precision of a bundle (folder + its manifest, possibly not saved yet) with
    TensorRT-RTX in memory, writing nothing: the export-time check ``--check-tensorrt``.

    Returns:
        precision -> network report (also sent as a ``done`` event, then its warnings).
    """
    options = options or BuildOptions(runtime="tensorrt-rtx")
    adapter = open_runtime(options)
    reports = {}
    for precision, entry in manifest.precisions.items():
        started = time.perf_counter()
        _, report, _ = compile_plan(
            adapter, Path(folder) / entry.file, manifest, precision, options
        )
        seconds = time.perf_counter() - started
        on_event(
            Event(
                f"check_tensorrt.{precision}",
                "done",
                f"{adapter.label} builds {entry.file} ({seconds:.1f} s): {report.summary()}",
                {"file": entry.file, "seconds": round(seconds, 3), "network": report.to_dict()},
            )
        )
        for warning in report.warnings:
            on_event(Event(f"check_tensorrt.{precision}", "warning", warning))
        reports[precision] = report
    return reports


def build_engine(
    onnx_path: Path,
    manifest: Manifest,
    precision: str,
    options: BuildOptions,
    out_path: Path,
    adapter: RuntimeAdapter | None = None,
    fold: str | None = None,
) -> BuiltEngine:
    """Compile one ONNX file into ``out_path`` (a ``.plan``) and write its sidecar beside it.

    ``adapter``: an opened runtime (:func:`open_runtime`); None opens ``options.runtime``.
    ``manifest``: for a fold of an ensemble, its one-model view
    (:func:`~medseg.bundle.folds.fold_manifest`); ``fold`` names it in the result.
    """
    adapter = adapter or open_runtime(options)
    started = time.perf_counter()
    source_sha = file_sha256(Path(onnx_path))
    if source_sha != manifest.precisions[precision].sha256:
        raise ConfigError(
            f"{onnx_path} does not match the {precision} sha256 in the manifest (truncated, "
            "tampered or from another export): re-export the bundle"
        )
    plan, report, config = compile_plan(adapter, onnx_path, manifest, precision, options)
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
    size = out_path.stat().st_size
    return BuiltEngine(precision, out_path, side, size, seconds, sidecar, fold)
