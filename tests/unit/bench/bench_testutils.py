"""Synthetic benchmark results shared by the bench tests (no measurement involved)."""

from __future__ import annotations

from typing import Any

from medseg.bench.results import AccuracyResult, BenchResults, LatencyStats, VariantResult

#: (precision, batch) -> (mean Dice, p50 ms per batch) of the default onnxruntime rows.
DEFAULTS = {
    ("fp32", 1): (0.950, 10.0),
    ("fp16", 1): (0.948, 8.0),
    ("int8", 1): (0.935, 5.0),
    ("fp32", 8): (0.950, 60.0),
    ("fp16", 8): (0.948, 40.0),
    ("int8", 8): (0.935, 25.0),
}


def make_row(
    precision: str = "fp32",
    batch: int = 1,
    *,
    backend: str = "onnxruntime",
    dice: float = 0.95,
    drop: float | None = None,
    p50: float = 10.0,
    p95: float | None = None,
    repeats: tuple[float, ...] | None = None,
    status: str = "ok",
    reason: str = "",
    threads: int | None = 2,
    worst: dict[str, Any] | None = None,
) -> VariantResult:
    """One row; ``repeats`` defaults to three repeat p50s within +-1 % of ``p50``."""
    if status != "ok":
        return VariantResult(backend, precision, batch, status=status, reason=reason)
    p95 = p50 * 1.2 if p95 is None else p95
    accuracy = AccuracyResult(
        dice_mean=dice,
        dice_per_class={"csf": dice - 0.01, "gm": dice, "wm": dice + 0.01},
        hd95_mm=1.5,
        hd95_mm_per_class={"csf": 2.0, "gm": 1.5, "wm": 1.0},
        sensitivity=0.96,
        specificity=0.99,
        dice_drop_pts=drop,
        argmax_agreement=None if drop is None else 0.99,
        worst_slice=worst,
    )
    return VariantResult(
        backend=backend,
        precision=precision,
        batch=batch,
        file_size_bytes=2_500_000 if precision == "fp32" else 1_250_000,
        accuracy=accuracy,
        latency=LatencyStats(p50, p95, p95 * 1.05, p50 * 1.02, p50 * 0.9, p95 * 1.1, 50),
        repeat_p50_ms=(p50 * 0.99, p50, p50 * 1.01) if repeats is None else repeats,
        slices_per_s=1000.0 * batch / p50,
        volume_s=0.5,
        threads=threads,
        peak_host_mb=512.0,
        gpu_mem_mb=None,
    )


def default_rows() -> list[VariantResult]:
    """onnxruntime fp32/fp16/int8 at batch 1 and 8, drops vs fp32 of the same batch."""
    rows = []
    for (precision, batch), (dice, p50) in DEFAULTS.items():
        ref = DEFAULTS[("fp32", batch)][0]
        drop = None if precision == "fp32" else round((ref - dice) * 100, 6)
        rows.append(make_row(precision, batch, dice=dice, drop=drop, p50=p50))
    return rows


def make_results(
    rows: list[VariantResult] | None = None,
    *,
    fingerprint: str = "sha256-bundle-aaaa",
    cpu: str = "Test CPU 3000",
    gpu: str | None = None,
    cases: int = 3,
) -> BenchResults:
    """A :class:`BenchResults` with :func:`default_rows` unless ``rows`` is given."""
    return BenchResults(
        schema_version=1,
        created="2025-01-01T12:00:00+00:00",
        bundle={"path": "bundles/mni", "name": "mni-attn", "fingerprint": fingerprint},
        dataset={"path": "data/mni152", "name": "mni152", "split": "test", "cases": cases},
        machine={
            "cpu": cpu,
            "cores": 2,
            "gpu": gpu,
            "driver": None,
            "python": "3.11.9",
            "libraries": {"numpy": "2.4.6", "onnxruntime": "1.20.0"},
            "load_1min": 0.3,
        },
        settings={"warmup": 5, "iters": 50, "repeats": 3},
        rows=tuple(default_rows() if rows is None else rows),
    )
