"""``run_bench``: every available (backend, precision, batch) of a bundle, measured.

What one (backend, precision) costs and gives is :mod:`medseg.bench.variants`; what to
measure, :mod:`medseg.bench.options`. FP32 of each backend runs first: it is the reference
of that backend's Dice drop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from medseg.bench.evaluation import VariantEvaluation, evaluation_cases
from medseg.bench.machine import describe_machine
from medseg.bench.networks import engine_networks
from medseg.bench.options import BENCH_BACKENDS, BenchOptions, auto_includes_torch, use_tta
from medseg.bench.results import SCHEMA_VERSION, BenchResults, VariantResult
from medseg.bench.roofline import cpu_fp32_peak, onnx_gflop_per_slice
from medseg.bench.variants import row_line, run_variant, select_backends, unsupported
from medseg.bundle.entries import RUNTIME_PRECISIONS
from medseg.bundle.manifest import Manifest
from medseg.data.check import check_dataset
from medseg.data.nnunet import NnUNetDataset
from medseg.errors import ConfigError
from medseg.names import file_precision
from medseg.runtime.pipelines import pipeline_for

__all__ = [
    "BENCH_BACKENDS",
    "BenchOptions",
    "auto_includes_torch",
    "bundle_fingerprint",
    "run_bench",
]

Log = Callable[[str], None]


def bundle_fingerprint(manifest: Manifest) -> str:
    """16 hex digits identifying the bundle's model files, classes and input."""
    payload = {
        "files": {p: e.sha256 for p, e in sorted(manifest.precisions.items())},
        "classes": manifest.classes,
        "input": str(manifest.input),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


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
    pipeline_for(manifest).resolve_tta(manifest, use_tta(options))  # --tta it cannot run
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
    for backend_name, reason in select_backends(options, bundle, manifest).items():
        reference: VariantEvaluation | None = None
        for precision in precisions:
            variant_rows, evaluation = run_variant(
                backend_name,
                reason or unsupported(backend_name, precision, options),
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
                    log(row_line(row))
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


def _gflop_per_slice(bundle: Path, manifest: Manifest) -> float | None:
    """GFLOP per slice of the FP32 file (the roofline's work); None when it cannot be read."""
    from medseg.errors import MedsegError

    try:
        return round(onnx_gflop_per_slice(bundle / manifest.precisions["fp32"].file), 3)
    except (MedsegError, OSError, ValueError):  # no onnx installed, unreadable graph
        return None
