"""Benchmark results: schema-versioned frozen dataclasses, written as strict JSON.

One :class:`BenchResults` per ``medseg bench`` run: what was measured (bundle, dataset),
where (machine), how (settings), one :class:`VariantResult` per (backend, precision, batch)
and the gate outcomes. Rows are looked up by key, never by position. The type hints are the
schema (:mod:`medseg.schema`, pydantic): keys without a default are required, unknown keys are
errors, and each error names the file and the key path
(``results.json: rows[2].latency.p95_ms must be a number, got str 'x'``).
NaN is written as ``null``; a ``null`` read back into a non-optional float becomes NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from medseg.bench.stats import samples_array
from medseg.errors import ConfigError
from medseg.names import BACKENDS as _BACKENDS
from medseg.names import RUNTIME_PRECISIONS as _RUNTIME_PRECISIONS
from medseg.schema import (
    FORBID_EXTRA,
    JsonRecord,
    NanFloat,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    load_json,
    parse,
    save_json,
)

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "WORST_SLICE_KEYS",
    "AccuracyResult",
    "BenchResults",
    "GateResult",
    "LatencyStats",
    "VariantResult",
    "row_sort_key",
]

SCHEMA_VERSION = 1
#: Backend names in pipeline order (``torch`` is the eager reference): :mod:`medseg.names`.
BACKENDS = _BACKENDS
#: ``bf16``: the FP32 file with BF16 arithmetic (OpenVINO on a CPU with native BF16).
PRECISIONS = _RUNTIME_PRECISIONS
STATUSES = ("ok", "skipped", "error")
#: Keys of :attr:`AccuracyResult.worst_slice`.
WORST_SLICE_KEYS = ("case_id", "axis", "index", "dice", "png")


@dataclass(frozen=True)
class LatencyStats(JsonRecord):
    """Statistics of per-batch timings (ms per batch), percentiles by numpy ``"linear"``."""

    __pydantic_config__ = FORBID_EXTRA

    p50_ms: NanFloat
    p95_ms: NanFloat
    p99_ms: NanFloat
    mean_ms: NanFloat
    min_ms: NanFloat
    max_ms: NanFloat
    n: StrictInt

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        """Summarise per-batch timings (ms); empty, negative or non-finite -> ConfigError."""
        a = samples_array(samples_ms, "latency samples")
        p50, p95, p99 = (float(v) for v in np.percentile(a, [50, 95, 99], method="linear"))
        return cls(p50, p95, p99, float(a.mean()), float(a.min()), float(a.max()), int(a.size))


@dataclass(frozen=True)
class AccuracyResult(JsonRecord):
    """Accuracy of one variant over the dataset (Dice in [0, 1]; pts = Dice x 100).

    Attributes:
        dice_mean: mean Dice over classes and cases.
        dice_per_class: class name -> mean Dice.
        hd95_mm: mean 95th-percentile Hausdorff distance over classes (mm), None if undefined.
        hd95_mm_per_class: class name -> HD95 (mm) or None.
        sensitivity: mean voxel sensitivity.
        specificity: mean voxel specificity.
        dice_drop_pts: (FP32 of the same backend - this) x 100; None for the reference row.
        argmax_agreement: fraction of voxels whose argmax equals FP32's of the same backend.
        worst_slice: ``{"case_id", "axis", "index", "dice", "png"}`` or None.
    """

    __pydantic_config__ = FORBID_EXTRA

    dice_mean: NanFloat
    dice_per_class: dict[str, NanFloat]
    hd95_mm: StrictFloat | None
    hd95_mm_per_class: dict[str, StrictFloat | None]
    sensitivity: NanFloat
    specificity: NanFloat
    dice_drop_pts: StrictFloat | None = None
    argmax_agreement: StrictFloat | None = None
    worst_slice: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        missing = [k for k in WORST_SLICE_KEYS if k not in (self.worst_slice or WORST_SLICE_KEYS)]
        if missing:
            raise ConfigError(f"worst_slice lacks {missing}; it needs {list(WORST_SLICE_KEYS)}")


@dataclass(frozen=True)
class VariantResult(JsonRecord):
    """One benchmarked variant: a backend running one precision at one batch size.

    Attributes:
        status: ``"ok"``, ``"skipped"`` (not available here, e.g. no TensorRT; not a
            failure) or ``"error"``; ``reason`` says why when not ok.
        file_size_bytes: size of the ONNX file or engine.
        latency: engine/session time per batch (ms).
        repeat_p50_ms: p50 of each repeat of the timing loop (ms per batch).
        slices_per_s: throughput (slices/s).
        volume_s: median end-to-end seconds per volume (pre/post-processing and I/O included).
        peak_host_mb: peak resident host memory (MB); gpu_mem_mb: peak GPU memory (MB).
        prepost_pct: median per volume of the pre- plus post-processing time (normalising,
            resampling, windowing, blending, argmax, connected components) as a percentage of
            the backend time of that volume; ``None`` when not measured.
        fold_s: fold ensembles (nnU-Net bundles): ``{fold: median backend seconds per
            volume}``, the cost of each fold; ``None`` for one-model bundles.
    """

    __pydantic_config__ = FORBID_EXTRA

    backend: StrictStr
    precision: StrictStr
    batch: StrictInt
    status: StrictStr = "ok"
    reason: StrictStr = ""
    file_size_bytes: StrictInt | None = None
    accuracy: AccuracyResult | None = None
    latency: LatencyStats | None = None
    repeat_p50_ms: tuple[NanFloat, ...] = ()
    slices_per_s: StrictFloat | None = None
    volume_s: StrictFloat | None = None
    threads: StrictInt | None = None
    peak_host_mb: StrictFloat | None = None
    gpu_mem_mb: StrictFloat | None = None
    prepost_pct: StrictFloat | None = None
    fold_s: dict[str, StrictFloat] | None = None

    def __post_init__(self) -> None:
        for name, value, accepted in (
            ("backend", self.backend, BACKENDS),
            ("precision", self.precision, PRECISIONS),
            ("status", self.status, STATUSES),
        ):
            if value not in accepted:
                raise ConfigError(f"{name} {value!r} is not one of {', '.join(accepted)}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ConfigError(f"batch must be an integer >= 1, got {self.batch!r}")
        object.__setattr__(self, "repeat_p50_ms", tuple(float(v) for v in self.repeat_p50_ms))

    @property
    def key(self) -> tuple[str, str, int]:
        """``(backend, precision, batch)``."""
        return (self.backend, self.precision, self.batch)

    @property
    def label(self) -> str:
        """Human label, e.g. ``"onnxruntime fp16 b8"``."""
        return f"{self.backend} {self.precision} b{self.batch}"

    @property
    def slug(self) -> str:
        """Dotted id used in gate names, e.g. ``"onnxruntime.fp16.b8"``."""
        return f"{self.backend}.{self.precision}.b{self.batch}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class GateResult(JsonRecord):
    """Outcome of one gate (see :mod:`medseg.bench.gates`); falsy when it failed.

    Attributes:
        name: stable id, e.g. ``"dice_drop[onnxruntime.int8.b1]"``.
        passed: True when within budget, and for skipped gates.
        measured: measured value in ``unit`` (None when not measured).
        allowed: budget in ``unit`` (None for status gates).
        unit: ``"pts"``, ``"ms"``, ``"%"``, ``"dice"`` or ``""``.
        message: one line, measured vs allowed, or why it was skipped.
        skipped: the gate could not apply (no baseline row, another machine...).
    """

    __pydantic_config__ = FORBID_EXTRA

    name: StrictStr
    passed: StrictBool
    measured: StrictFloat | None
    allowed: StrictFloat | None
    unit: StrictStr
    message: StrictStr
    skipped: StrictBool = False

    def __post_init__(self) -> None:
        if self.skipped and not self.passed:
            raise ConfigError(f"gate {self.name} is skipped but not passed; skipped gates pass")

    def __bool__(self) -> bool:
        return self.passed


def row_sort_key(row: VariantResult) -> tuple[int, int, int]:
    """Sort rows by backend (pipeline order), precision (fp32, fp16, int8), then batch."""
    return (BACKENDS.index(row.backend), PRECISIONS.index(row.precision), row.batch)


@dataclass(frozen=True)
class BenchResults(JsonRecord):
    """Everything one ``medseg bench`` run measured; falsy when a gate failed.

    Attributes:
        created: ISO-8601 time of the run.
        bundle: ``{"path", "name", "fingerprint", "networks"}`` (networks: the network
            reports of the built engines, :func:`medseg.bench.networks.engine_networks`).
        dataset: ``{"path", "name", "split", "cases"}``.
        machine: ``{"cpu", "cores", "gpu", "driver", "python", "libraries", "load_1min", ...}``.
        settings: ``{"warmup", "iters", "repeats", ...}``.
        rows: one per (backend, precision, batch); keys are unique.
        gates: gate outcomes, empty until :func:`medseg.bench.gates.evaluate_gates` ran.
    """

    __pydantic_config__ = FORBID_EXTRA

    schema_version: StrictInt
    created: StrictStr
    bundle: dict[str, Any]
    dataset: dict[str, Any]
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: tuple[VariantResult, ...]
    gates: tuple[GateResult, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "gates", tuple(self.gates))
        seen: set[tuple[str, str, int]] = set()
        for r in self.rows:
            if r.key in seen:
                raise ConfigError(
                    f"two result rows for {r.label}; each (backend, precision, "
                    "batch) is measured once"
                )
            seen.add(r.key)

    def row(self, backend: str, precision: str, batch: int) -> VariantResult | None:
        """The row of ``(backend, precision, batch)``, or None."""
        return next((r for r in self.rows if r.key == (backend, precision, batch)), None)

    @property
    def passed(self) -> bool:
        """True when no gate failed (skipped gates count as passed)."""
        return all(self.gates)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failed_gates(self) -> tuple[GateResult, ...]:
        return tuple(g for g in self.gates if not g.passed)

    def with_gates(self, gates: Sequence[GateResult]) -> BenchResults:
        return replace(self, gates=tuple(gates))

    @classmethod
    def from_dict(cls, data: Any, source: str = "results") -> BenchResults:
        """Validate and build; unknown ``schema_version`` -> ConfigError telling to re-run."""
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{source}: schema_version {version!r} is not supported (this medseg reads "
                f"{SCHEMA_VERSION}); re-run `medseg bench` to regenerate the results"
            )
        return parse(cls, data, source)

    def save(self, path: Path) -> Path:
        """Write strict JSON atomically (NaN/Inf become ``null``)."""
        return save_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path) -> BenchResults:
        """Read and validate a results file; ConfigError names ``path``."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"results file {path} does not exist; run `medseg bench` first")
        data = load_json(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be an object")
        return cls.from_dict(data, str(path))
