"""One (backend, precision) of ``medseg bench``: whether it runs here, its backend, its rows.

For each (backend, precision): one accuracy pass over the evaluated volumes through the
runtime at the largest requested batch size (labels do not depend on the batch size; the
backend-contract tests check it), which also gives the end-to-end seconds per volume;
then, per batch size, the timing loop on real network-size slices: ``warmup`` calls, then
``repeats`` x ``iters`` timed calls (CUDA events on a GPU, ``perf_counter_ns`` on CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.bench.evaluation import EvalCase, VariantEvaluation, evaluate_variant
from medseg.bench.latency import PeakRss, time_batches, timing_slices
from medseg.bench.options import (
    BENCH_BACKENDS,
    BenchOptions,
    auto_includes_torch,
    torch_device,
    use_tta,
)
from medseg.bench.results import VariantResult
from medseg.bundle.manifest import Manifest
from medseg.errors import BackendError, ConfigError, EngineBuildError
from medseg.names import file_precision
from medseg.runtime import Backend, Segmenter, create_backend
from medseg.runtime.backends import backend_class
from medseg.runtime.pipelines import pipeline_for

__all__ = ["backend_availability", "row_line", "run_variant", "select_backends", "unsupported"]


def backend_availability(name: str, bundle: Path, manifest: Manifest) -> str | None:
    """``None`` when ``name`` can run here, else the reason it is skipped (the backend
    class's :meth:`~medseg.runtime.backends.Backend.available`; the torch reference also
    needs the bundle's source checkpoint)."""
    if name != "torch":
        return backend_class(name).available()
    from medseg.bench.torch_reference import TorchBackend, find_checkpoint

    reason = TorchBackend.available()
    if reason is not None:
        return reason
    try:
        find_checkpoint(bundle, manifest)
    except ConfigError as exc:
        return str(exc)
    return None


def select_backends(
    options: BenchOptions, bundle: Path, manifest: Manifest
) -> dict[str, str | None]:
    """Backend -> skip reason (``None``: runs). ``auto`` lists only what can run here."""
    if options.backends != ("auto",):
        return {b: backend_availability(b, bundle, manifest) for b in options.backends}
    names = [b for b in BENCH_BACKENDS if b != "torch" or auto_includes_torch(options)]
    found = {b: backend_availability(b, bundle, manifest) for b in names}
    return {b: reason for b, reason in found.items() if reason is None}


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
            checkpoint, manifest, precision, torch_device(options), options.threads
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


def unsupported(name: str, precision: str, options: BenchOptions) -> str | None:
    """Why a backend has no ``precision`` here (its row is printed as skipped with this
    reason), or ``None``: bf16 is an OpenVINO precision; the torch reference runs only its
    native ones (:func:`medseg.bench.torch_reference.torch_unsupported`)."""
    if name == "torch":
        from medseg.bench.torch_reference import torch_unsupported

        return torch_unsupported(precision, torch_device(options))
    if precision == "bf16" and name != "openvino":
        return (
            f"bf16 runs on OpenVINO only (the FP32 file with its BF16 inference hint); {name} "
            "has no BF16 setting for this file"
        )
    return None


def row_line(row: VariantResult) -> str:
    if row.status != "ok" or row.accuracy is None or row.latency is None:
        return f"{row.label}: {row.status} ({row.reason})"
    folds = ""
    if row.fold_s:
        folds = "; per fold " + ", ".join(f"{f} {s:.2f} s" for f, s in row.fold_s.items())
    return (
        f"{row.label}: Dice {row.accuracy.dice_mean:.4f}, p50 {row.latency.p50_ms:.1f} ms, "
        f"p95 {row.latency.p95_ms:.1f} ms per batch{folds}"
    )


def run_variant(
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
        tta=use_tta(options),
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
