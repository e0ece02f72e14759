"""``run_bench``: every available (backend, precision, batch) of a bundle, measured.

For each (backend, precision): one accuracy pass over the evaluated volumes through the
runtime at the largest requested batch size (labels do not depend on the batch size; the
backend-contract tests check it), which also gives the end-to-end seconds per volume;
then, per batch size, the timing loop on real network-size slices: ``warmup`` calls, then
``repeats`` x ``iters`` timed calls (CUDA events on a GPU, ``perf_counter_ns`` on CPU).
FP32 of each backend runs first: it is the reference of that backend's Dice drop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bench.evaluation import (
    EvalCase,
    Split,
    VariantEvaluation,
    evaluate_variant,
    evaluation_cases,
)
from medseg.bench.latency import PeakRss, time_batches, timing_slices
from medseg.bench.machine import describe_machine
from medseg.bench.networks import engine_networks
from medseg.bench.results import SCHEMA_VERSION, BenchResults, VariantResult
from medseg.bench.roofline import cpu_fp32_peak, onnx_gflop_per_slice
from medseg.bundle.entries import PRECISIONS, RUNTIME_PRECISIONS
from medseg.bundle.manifest import Manifest
from medseg.data.check import check_dataset
from medseg.data.nnunet import NnUNetDataset
from medseg.errors import BackendError, ConfigError, EngineBuildError, MedsegError
from medseg.names import BENCH_BACKENDS as _BENCH_BACKENDS
from medseg.names import file_precision
from medseg.options import check_threads
from medseg.runtime import Backend, Segmenter, create_backend
from medseg.runtime.pipelines import pipeline_for

__all__ = [
    "BENCH_BACKENDS",
    "BenchOptions",
    "auto_includes_torch",
    "bundle_fingerprint",
    "run_bench",
]

BENCH_BACKENDS = _BENCH_BACKENDS  # medseg.names
Log = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    """What to measure.

    Attributes:
        backends: ``("auto",)`` (ONNX Runtime, OpenVINO when installed, TensorRT when usable,
            the torch reference when installed and CUDA is usable: :func:`auto_includes_torch`)
            or names from :data:`BENCH_BACKENDS`.
        precisions: subset of fp32/fp16/bf16/int8; every file one must be in the bundle
            (``bf16`` runs the FP32 file on OpenVINO, and is the torch reference's CPU
            autocast; a backend without a precision gets a skipped row saying why).
        batches: batch sizes, each within the bundle's batch range.
        warmup: untimed calls before timing.
        iters: timed calls per repeat.
        repeats: timing repeats (their p50s feed the noise-aware baseline comparison).
        split: ``"val"`` (the bundle's recorded validation slices), ``"test"``, ``"all"``.
        threads: CPU threads of ONNX Runtime and torch (``None``: library defaults).
        max_cases: evaluate at most this many cases (``None``: all).
        device: torch reference device, ``"cpu"`` or ``"cuda"`` (``None``: CUDA if present).
        tta: mirroring test-time augmentation (sliding-window bundles).
        postprocess: apply the bundle's per-class post-processing.
    """

    backends: tuple[str, ...] = ("auto",)
    precisions: tuple[str, ...] = PRECISIONS
    batches: tuple[int, ...] = (1, 8)
    warmup: int = 3
    iters: int = 20
    repeats: int = 3
    split: Split = "val"
    threads: int | None = None
    max_cases: int | None = None
    device: str | None = None
    overlays: bool = True
    tta: bool = False
    postprocess: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in ("auto", *BENCH_BACKENDS)]
        if unknown or not self.backends:
            raise ConfigError(
                f"--backends {','.join(self.backends)}: accepted auto or "
                + ", ".join(BENCH_BACKENDS)
            )
        bad = [p for p in self.precisions if p not in RUNTIME_PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(
                f"--precisions {bad or '(none)'}: accepted {', '.join(RUNTIME_PRECISIONS)}"
            )
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"--batch {self.batches}: batch sizes must be >= 1")
        for name, value, least in (
            ("warmup", self.warmup, 0),
            ("iters", self.iters, 1),
            ("repeats", self.repeats, 1),
        ):
            if value < least:
                raise ConfigError(f"--{name} {value} must be >= {least}")
        if self.split not in ("val", "test", "all"):
            raise ConfigError(f"--split {self.split!r}: accepted val, test, all")
        if self.max_cases is not None and self.max_cases < 1:
            raise ConfigError(f"--max-cases {self.max_cases} must be >= 1")
        check_threads(self.threads, "--threads")


def bundle_fingerprint(manifest: Manifest) -> str:
    """16 hex digits identifying the bundle's model files, classes and input."""
    payload = {
        "files": {p: e.sha256 for p, e in sorted(manifest.precisions.items())},
        "classes": manifest.classes,
        "input": str(manifest.input),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _backend_availability(name: str, bundle: Path, manifest: Manifest) -> str | None:
    """``None`` when ``name`` can run here, else the reason it is skipped."""
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'medseg-edge[runtime]')"
        return None
    if name == "openvino":
        import importlib.util

        if importlib.util.find_spec("openvino") is None:
            return "openvino is not installed (pip install 'medseg-edge[openvino]')"
        return None
    if name == "tensorrt":
        try:
            from medseg.runtime.cuda import gpu_available
            from medseg.runtime.engines import tensorrt_module

            tensorrt_module()
        except MedsegError as exc:
            return str(exc)
        if not gpu_available():
            return "no NVIDIA GPU visible"
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        return "torch is not installed (the reference row needs medseg-edge[train])"
    from medseg.bench.torch_reference import find_checkpoint

    try:
        find_checkpoint(bundle, manifest)
    except ConfigError as exc:
        return str(exc)
    return None


def _select_backends(
    options: BenchOptions, bundle: Path, manifest: Manifest
) -> dict[str, str | None]:
    """Backend -> skip reason (``None``: runs). ``auto`` lists only what can run here."""
    if options.backends != ("auto",):
        return {b: _backend_availability(b, bundle, manifest) for b in options.backends}
    names = [b for b in BENCH_BACKENDS if b != "torch" or auto_includes_torch(options)]
    found = {b: _backend_availability(b, bundle, manifest) for b in names}
    return {b: reason for b, reason in found.items() if reason is None}


def auto_includes_torch(options: BenchOptions) -> bool:
    """Whether ``--backends auto`` adds the PyTorch reference row: on CUDA only.

    On a CPU the eager reference is timed like a deployment backend but is none: on the
    12-case cohort (2 shared cores, load 4-7) its batch-8 timing loop alone took about 4.5 of
    the default bench's 10.4 minutes (4.2 s per call, 63 calls). ``--backends ...,torch``
    still adds it anywhere; the export already checks ONNX-vs-PyTorch parity.
    """
    return _torch_device(options) == "cuda"


def _tta(options: BenchOptions) -> bool | None:
    """``--tta`` or the recipe kind's default (nnU-Net bundles mirror as nnU-Net does)."""
    return True if options.tta else None


def _make_fold_backends(
    name: str, bundle: Path, manifest: Manifest, precision: str, options: BenchOptions
) -> tuple[dict[str, Backend] | None, str, int | None]:
    """:func:`_make_backend` of a fold ensemble: one backend per fold, the files' sizes summed."""
    from medseg.runtime.pipelines.nnunet import fold_backends

    if name == "torch":
        return None, "no PyTorch reference row for fold ensembles (nnU-Net bundles)", None
    threads = None if name in ("tensorrt", "tensorrt-rtx") else options.threads
    try:
        backends = fold_backends(bundle, manifest, name, precision, threads=threads)
    except EngineBuildError as exc:  # a fold without an engine for this device
        return None, str(exc), None
    except ConfigError as exc:
        if precision != "bf16":
            raise
        return None, str(exc), None
    engines = [getattr(b, "engine_path", None) for b in backends.values()]
    if all(isinstance(p, Path) and p.is_file() for p in engines):
        return backends, "", sum(p.stat().st_size for p in engines)  # type: ignore[union-attr]
    return backends, "", manifest.precisions[file_precision(precision)].size_bytes


def _make_backend(
    name: str, bundle: Path, manifest: Manifest, precision: str, options: BenchOptions
) -> tuple[Backend | dict[str, Backend] | None, str, int | None]:
    """(backend, or one per fold, or None; skip reason; file size in bytes) for one variant."""
    if pipeline_for(manifest).ensemble:
        return _make_fold_backends(name, bundle, manifest, precision, options)
    if name == "torch":
        from medseg.bench.torch_reference import TorchBackend, find_checkpoint

        checkpoint = find_checkpoint(bundle, manifest)
        torch_backend = TorchBackend(
            checkpoint, manifest, precision, _torch_device(options), options.threads
        )
        return torch_backend, "", checkpoint.stat().st_size
    if name == "tensorrt":
        from medseg.runtime.backends.tensorrt import TensorRTBackend

        try:  # the engine check says why an engine may not run here (stale, other GPU...)
            backend = create_backend(bundle, manifest, name, precision)
        except EngineBuildError as exc:
            return None, str(exc), None
        assert isinstance(backend, TensorRTBackend)
        size = backend.engine_path.stat().st_size if backend.engine_path is not None else None
        return backend, "", size
    try:  # bf16 on a CPU without native BF16: a skipped row saying which instruction set
        backend = create_backend(bundle, manifest, name, precision, threads=options.threads)
    except ConfigError as exc:
        if precision != "bf16":
            raise
        return None, str(exc), None
    loaded = getattr(getattr(backend, "loader", None), "path", None)  # e.g. model.int8.cpu.onnx
    if isinstance(loaded, Path) and loaded.is_file():
        return backend, "", loaded.stat().st_size
    return backend, "", manifest.precisions[file_precision(precision)].size_bytes


def _torch_device(options: BenchOptions) -> str:
    return options.device or ("cuda" if _cuda_usable() else "cpu")


def _unsupported(name: str, precision: str, options: BenchOptions) -> str | None:
    """Why a backend has no ``precision`` here (its row is printed as skipped with this
    reason), or ``None``: bf16 is an OpenVINO precision; the torch reference runs only its
    native ones (:func:`medseg.bench.torch_reference.torch_unsupported`)."""
    if name == "torch":
        from medseg.bench.torch_reference import torch_unsupported

        return torch_unsupported(precision, _torch_device(options))
    if precision == "bf16" and name != "openvino":
        return (
            f"bf16 runs on OpenVINO only (the FP32 file with its BF16 inference hint); {name} "
            "has no BF16 setting for this file"
        )
    return None


def _cuda_usable() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def run_bench(
    bundle: str | Path,
    dataset: str | Path,
    options: BenchOptions,
    overlay_dir: Path | None = None,
    log: Log = lambda _: None,
    advance: Callable[[str], None] | None = None,
) -> BenchResults:
    """Measure every (backend, precision, batch) the options ask for.

    Args:
        bundle: the bundle folder.
        dataset: an nnU-Net raw dataset with the bundle's classes.
        options: what to measure.
        overlay_dir: where the worst-slice PNG of each variant goes (``None``: none).
        log: receives one line per finished variant.
        advance: called with a description after each case and each timing loop (progress).

    Raises:
        ConfigError: a precision the bundle lacks, a batch size outside its range, a
            dataset whose labels differ from the bundle's classes.
    """
    bundle = Path(bundle)
    manifest = Manifest.load(bundle)
    missing = [p for p in options.precisions if file_precision(p) not in manifest.precisions]
    if missing:
        raise ConfigError(
            f"bundle {bundle} has no {', '.join(missing)} model; it has "
            f"{', '.join(manifest.precisions)} (re-export with --fp16/--int8)"
        )
    for b in options.batches:
        if not manifest.input.batch.contains(b):
            raise ConfigError(
                f"--batch {b} is outside the bundle's batch range {manifest.input.batch} "
                "(min:opt:max)"
            )
    pipeline_for(manifest).resolve_tta(manifest, _tta(options))  # --tta it cannot run
    data = NnUNetDataset.open(dataset)
    # the integrity check of `medseg data check` and `medseg train`, before any heavy work:
    # a label value not in dataset.json, a label grid that differs from its image...
    check_dataset(data.root, subsets=("test",) if options.split == "test" else ("train",))
    cases, described = evaluation_cases(data, manifest, options.split)
    cases = cases[: options.max_cases] if options.max_cases else cases
    precisions = [
        "fp32",
        *[p for p in RUNTIME_PRECISIONS if p in options.precisions and p != "fp32"],
    ]
    accuracy_batch = max(options.batches)
    rows: list[VariantResult] = []
    for backend_name, reason in _select_backends(options, bundle, manifest).items():
        reference: VariantEvaluation | None = None
        for precision in precisions:
            variant_rows, evaluation = _run_variant(
                backend_name,
                reason or _unsupported(backend_name, precision, options),
                bundle,
                manifest,
                precision,
                cases,
                reference,
                options,
                accuracy_batch,
                overlay_dir,
                advance,
            )
            if precision == "fp32":
                reference = evaluation
            if precision in options.precisions:
                rows.extend(variant_rows)
                for row in variant_rows:
                    log(_row_line(row))
    return BenchResults(
        schema_version=SCHEMA_VERSION,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        bundle={
            "path": str(bundle),
            "name": manifest.model.get("name", bundle.name),
            "fingerprint": bundle_fingerprint(manifest),
            "networks": engine_networks(bundle),
            "gflop_per_slice": _gflop_per_slice(bundle, manifest),
        },
        dataset={
            "path": str(dataset),
            "name": data.spec.name,
            "split": options.split,
            "cases": [c.case_id for c in cases],
            "description": described,
        },
        machine={**describe_machine(), "fp32_peak": cpu_fp32_peak(options.threads)},
        settings={
            "warmup": options.warmup,
            "iters": options.iters,
            "repeats": options.repeats,
            "batches": list(options.batches),
            "threads": options.threads,
            "accuracy_batch": accuracy_batch,
            "tta": options.tta,
            "postprocess": options.postprocess,
            **options.extra,
        },
        rows=tuple(rows),
    )


def _row_line(row: VariantResult) -> str:
    if row.status != "ok" or row.accuracy is None or row.latency is None:
        return f"{row.label}: {row.status} ({row.reason})"
    folds = ""
    if row.fold_s:
        folds = "; per fold " + ", ".join(f"{f} {s:.2f} s" for f, s in row.fold_s.items())
    return (
        f"{row.label}: Dice {row.accuracy.dice_mean:.4f}, p50 {row.latency.p50_ms:.1f} ms, "
        f"p95 {row.latency.p95_ms:.1f} ms per batch{folds}"
    )


def _run_variant(
    backend_name: str,
    reason: str | None,
    bundle: Path,
    manifest: Manifest,
    precision: str,
    cases: Sequence[EvalCase],
    reference: VariantEvaluation | None,
    options: BenchOptions,
    accuracy_batch: int,
    overlay_dir: Path | None,
    advance: Callable[[str], None] | None,
) -> tuple[list[VariantResult], VariantEvaluation | None]:
    """The rows of one (backend, precision) for every batch size, and its evaluation."""

    def skipped(status: str, why: str) -> list[VariantResult]:
        return [VariantResult(backend_name, precision, b, status, why) for b in options.batches]

    if reason is not None:
        return skipped("skipped", reason), None
    backend, why, size = _make_backend(backend_name, bundle, manifest, precision, options)
    if backend is None:
        return skipped("skipped", why), None
    segmenter = Segmenter(
        backend,
        manifest,
        precision,
        batch_size=accuracy_batch,
        tta=_tta(options),
        postprocess=options.postprocess,
    )
    backend = segmenter.backend  # the one model, or the first fold: the timed loop's
    name = f"{backend_name} {precision}"
    try:
        with segmenter, PeakRss() as memory:
            spec = manifest.input  # one untimed call: first-call allocations stay out of volume_s
            spatial: tuple[int, ...] = (spec.height.opt, spec.width.opt)
            spatial = spatial if spec.depth is None else (spec.depth.opt, *spatial)
            for runner in segmenter.runners():
                runner.infer(np.zeros((accuracy_batch, spec.channels, *spatial), "f4"))
            overlay = None
            if overlay_dir is not None and options.overlays:
                overlay = overlay_dir / f"worst_{backend_name}_{precision}.png"
            evaluation = evaluate_variant(
                segmenter,
                cases,
                reference,
                overlay,
                on_case=(lambda c: advance(f"{name}: {c}")) if advance else None,
            )
            slices = timing_slices(segmenter, cases[0], max(options.batches))
            timed = {}
            for batch in options.batches:
                timed[batch] = time_batches(backend, slices, batch, options)
                if advance:
                    advance(f"{name} b{batch}: timed")
            gpu_bytes = getattr(backend, "gpu_memory_bytes", None)
    except (EngineBuildError, BackendError) as exc:  # failed on this device: a row, not a crash
        return skipped("error", str(exc)), None
    volume_s = float(np.median(evaluation.volume_seconds))
    fold_s = {f: float(np.median(s)) for f, s in evaluation.fold_seconds.items()} or None
    prepost = 100.0 * float(np.median(evaluation.prepost_shares))
    threads = getattr(backend, "threads", None)
    rows = [
        VariantResult(
            backend=backend_name,
            precision=precision,
            batch=batch,
            status="ok",
            reason="",
            file_size_bytes=size,
            accuracy=evaluation.accuracy,
            latency=stats,
            repeat_p50_ms=repeat_p50,
            slices_per_s=1e3 * batch / stats.p50_ms,
            volume_s=volume_s if batch == accuracy_batch else None,
            prepost_pct=prepost if batch == accuracy_batch else None,
            threads=threads if isinstance(threads, int) else None,
            peak_host_mb=memory.peak_mb,
            gpu_mem_mb=gpu_bytes / 1e6 if isinstance(gpu_bytes, int) else None,
            fold_s=fold_s if batch == accuracy_batch else None,
        )
        for batch, (stats, repeat_p50) in timed.items()
    ]
    return rows, evaluation


def _gflop_per_slice(bundle: Path, manifest: Manifest) -> float | None:
    """GFLOP per slice of the FP32 file (the roofline's work); None when it cannot be read."""
    from medseg.errors import MedsegError

    try:
        return round(onnx_gflop_per_slice(bundle / manifest.precisions["fp32"].file), 3)
    except (MedsegError, OSError, ValueError):  # no onnx installed, unreadable graph
        return None
