"""Benchmark gates: budgets on Dice and milliseconds that fail ``medseg bench`` (exit 1).

Gates file (TOML, e.g. ``benchmarks/gates/ci-cpu.toml``); every key is optional::

    [accuracy]
    min_dice = 0.90                                  # mean Dice floor, every ok row, in [0, 1]
    max_dice_drop_pts = { fp16 = 0.5, int8 = 1.5 }   # pts (Dice x 100) vs FP32 of the same
                                                     # backend; negative = impossible gate
    [latency]
    max_p95_ms = { "onnxruntime.fp32" = 900.0, "tensorrt.int8.b8" = 5.0 }
                                                     # ms per batch, > 0; "backend.precision"
                                                     # (every batch) or "backend.precision.bN"
                                                     # (that batch; it wins over the former)
    [baseline]                                       # only with a baseline results file
    max_latency_regression_pct = 30.0                # >= 0, method in medseg.bench.stats
    max_dice_regression_pts = 0.2                    # >= 0, mean Dice fall vs the baseline row

Gate names are stable ids: ``min_dice[onnxruntime.fp16.b8]``, ``dice_drop[...]``,
``p95_ms[...]``, ``baseline_latency[...]``, ``baseline_dice[...]`` and ``status[...]`` (a
row that a gate targets ended in error: fails; was skipped, e.g. no TensorRT: skipped).
A value exactly at its budget passes. A gate whose value was not measured fails. Relative
latency gates are skipped (with a warning, see :func:`gate_warnings`) when the baseline
comes from another bundle, CPU model or GPU; baseline Dice gates are kept unless the
baseline was measured on another dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medseg.bench.gate_spec import FLAG_NAMES, GateSpec, parse_flag_pairs
from medseg.bench.results import BenchResults, GateResult, VariantResult, row_sort_key
from medseg.bench.stats import compare_latency
from medseg.runtime.accuracy_class import CLASS_DEPENDENT

__all__ = [
    "FLAG_NAMES",
    "GateResult",
    "GateSpec",
    "evaluate_gates",
    "gate_warnings",
    "machine_fingerprint",
    "parse_flag_pairs",
    "update_baseline",
]

_EPS = 1e-9  # boundary tolerance: a value exactly at its budget passes despite float rounding


def machine_fingerprint(machine: Mapping[str, Any]) -> str:
    """What latency depends on: ``"<cpu model> | <gpu or 'no GPU'>"``."""
    return f"{machine.get('cpu') or 'unknown CPU'} | {machine.get('gpu') or 'no GPU'}"


def _latency_skip(results: BenchResults, baseline: BenchResults) -> str | None:
    cur, base = results.bundle.get("fingerprint"), baseline.bundle.get("fingerprint")
    if not cur or cur != base:
        return (
            f"baseline from another bundle (fingerprint {str(base)[:12]} vs {str(cur)[:12]}): "
            "relative latency gates skipped, accuracy gates kept"
        )
    cur_m, base_m = machine_fingerprint(results.machine), machine_fingerprint(baseline.machine)
    if cur_m != base_m:
        return (
            f"baseline from another machine ({base_m} vs {cur_m}): relative latency gates "
            "skipped, accuracy gates kept"
        )
    return None


def _dice_skip(results: BenchResults, baseline: BenchResults) -> str | None:
    keys = ("name", "split", "cases")
    cur = {k: results.dataset.get(k) for k in keys}
    base = {k: baseline.dataset.get(k) for k in keys}
    if cur != base:
        return (
            f"baseline measured on another dataset ({base} vs {cur}): baseline Dice gates skipped"
        )
    return None


def _cpu_class(machine: Mapping[str, Any]) -> str | None:
    features = machine.get("cpu_features")
    return features.get("cpu_class") if isinstance(features, Mapping) else None


def _class_skip(results: BenchResults, baseline: BenchResults) -> str | None:
    """INT8 and BF16 Dice belong to a CPU class (:mod:`medseg.runtime.accuracy_class`): a
    baseline from another class (or one that does not record it) says nothing about this
    one's; the absolute accuracy gates still apply."""
    cur, base = _cpu_class(results.machine), _cpu_class(baseline.machine)
    if results.machine.get("gpu") or cur == base:
        return None
    return (
        f"baseline measured on CPU class {base or 'unrecorded'}, this CPU is {cur}: "
        "INT8/BF16 numerics differ between classes"
    )


def gate_warnings(
    results: BenchResults, spec: GateSpec, baseline: BenchResults | None
) -> tuple[str, ...]:
    """Why some gates will be skipped as a whole (for the caller to print); empty if none."""
    if not spec.uses_baseline:
        return ()
    if baseline is None:
        return ("[baseline] budgets are set but no baseline was given: baseline gates skipped",)
    out = []
    if spec.max_latency_regression_pct is not None:
        out.append(_latency_skip(results, baseline))
    if spec.max_dice_regression_pts is not None:
        out.append(_dice_skip(results, baseline))
    return tuple(w for w in out if w)


def _check(
    name: str,
    measured: float | None,
    allowed: float,
    unit: str,
    missing: str,
    higher_ok: bool = False,
    extra: str = "",
) -> GateResult:
    """Pass when ``measured <= allowed`` (``>=`` with ``higher_ok``), within :data:`_EPS`.

    A ``measured`` of None or NaN fails: ``missing`` says why it was not measured.
    """
    if measured is None or math.isnan(measured):
        return GateResult(name, False, None, allowed, unit, f"{name}: not measured: {missing}")
    passed = measured >= allowed - _EPS if higher_ok else measured <= allowed + _EPS
    op = (">=" if passed else "<") if higher_ok else ("<=" if passed else ">")
    digits = {"dice": 4, "%": 1}.get(unit, 2)
    u = "" if unit == "dice" else f" {unit}"
    msg = f"{name}: {measured:.{digits}f}{u} {op} allowed {allowed:.{digits}f}{u}{extra}"
    return GateResult(name, passed, measured, allowed, unit, msg)


def _skip(name: str, why: str, unit: str = "") -> GateResult:
    return GateResult(name, True, None, None, unit, f"{name}: skipped: {why}", skipped=True)


def _latency_gate(name: str, row: VariantResult, base: VariantResult, budget: float) -> GateResult:
    if row.latency is None:
        return _check(name, None, budget, "%", "no latency in this run")
    if base.latency is None:
        return _skip(name, "no latency in the baseline row", "%")
    if row.threads != base.threads:
        return _skip(name, f"threads {row.threads} vs baseline {base.threads}", "%")
    c = compare_latency(
        row.repeat_p50_ms or (row.latency.p50_ms,),
        base.repeat_p50_ms or (base.latency.p50_ms,),
        budget,
    )
    over = c.change_pct > budget + _EPS
    noise = " but within noise" if over and not c.regressed else ""
    msg = (
        f"{name}: {c.change_pct:+.1f} % {'>' if over else '<='} allowed {budget:.1f} %{noise} "
        f"(p50 {c.current_ms:.2f} ms vs baseline {c.baseline_ms:.2f} ms; {c.detail})"
    )
    return GateResult(name, not c.regressed, c.change_pct, budget, "%", msg)


def _baseline_gates(
    row: VariantResult,
    spec: GateSpec,
    baseline: BenchResults,
    lat_skip: str | None,
    dice_skip: str | None,
    class_skip: str | None = None,
) -> list[GateResult]:
    out: list[GateResult] = []
    base = baseline.row(*row.key)
    missing = "no such row in the baseline" if base is None else None
    if base is not None and not base.ok:
        missing = f"the baseline row was {base.status}"
    lat_budget, dice_budget = spec.max_latency_regression_pct, spec.max_dice_regression_pts
    if lat_budget is not None:
        name = f"baseline_latency[{row.slug}]"
        if base is None or lat_skip or missing:
            out.append(_skip(name, lat_skip or str(missing), "%"))
        else:
            out.append(_latency_gate(name, row, base, lat_budget))
    if dice_budget is not None:
        name = f"baseline_dice[{row.slug}]"
        old = None if base is None or base.accuracy is None else base.accuracy.dice_mean
        cur = None if row.accuracy is None else row.accuracy.dice_mean
        if dice_skip is None and row.precision in CLASS_DEPENDENT:
            dice_skip = class_skip
        if dice_skip or missing or old is None or math.isnan(old):
            out.append(_skip(name, dice_skip or missing or "no Dice in the baseline row", "pts"))
        else:
            extra = f" (mean Dice {cur:.4f} vs baseline {old:.4f})" if cur is not None else ""
            drop = None if cur is None else (old - cur) * 100
            out.append(_check(name, drop, dice_budget, "pts", "no Dice in this run", extra=extra))
    return out


def evaluate_gates(
    results: BenchResults, spec: GateSpec, baseline: BenchResults | None = None
) -> tuple[GateResult, ...]:
    """Evaluate every gate of ``spec`` on ``results`` (rows in table order).

    Args:
        results: this run.
        spec: the budgets.
        baseline: a previous run for the ``[baseline]`` budgets (ignored when None).

    Returns:
        One :class:`GateResult` per (gate, targeted row), plus a skipped ``p95_ms[target]``
        for each latency target that matched no row.
    """
    lat_skip = _latency_skip(results, baseline) if baseline is not None else None
    dice_skip = _dice_skip(results, baseline) if baseline is not None else None
    class_skip = _class_skip(results, baseline) if baseline is not None else None
    gates: list[GateResult] = []
    matched: set[str] = set()
    for row in sorted(results.rows, key=row_sort_key):
        drop_budget = spec.max_dice_drop_pts.get(row.precision)
        p95 = next(
            (
                (t, spec.max_p95_ms[t])
                for t in (row.slug, row.slug.rsplit(".", 1)[0])
                if t in spec.max_p95_ms
            ),
            None,
        )
        matched.update([p95[0]] if p95 else [])
        use_base = baseline is not None and spec.uses_baseline
        if spec.min_dice is None and drop_budget is None and p95 is None and not use_base:
            continue
        status = f"status[{row.slug}]"
        if row.status == "error":
            msg = f"{status}: variant failed ({row.reason or 'no reason given'})"
            gates.append(GateResult(status, False, None, None, "", msg))
            continue
        if row.status == "skipped":
            gates.append(_skip(status, row.reason or "variant skipped"))
            continue
        acc, lat = row.accuracy, row.latency
        if spec.min_dice is not None:
            dice = None if acc is None else acc.dice_mean
            gates.append(
                _check(
                    f"min_dice[{row.slug}]",
                    dice,
                    spec.min_dice,
                    "dice",
                    "no Dice for this row",
                    higher_ok=True,
                )
            )
        if drop_budget is not None:
            drop = None if acc is None else acc.dice_drop_pts
            why = f"no FP32 reference of {row.backend} to compare with"
            gates.append(_check(f"dice_drop[{row.slug}]", drop, drop_budget, "pts", why))
        if p95 is not None:
            gates.append(
                _check(
                    f"p95_ms[{row.slug}]",
                    None if lat is None else lat.p95_ms,
                    p95[1],
                    "ms",
                    "no latency for this row",
                )
            )
        if baseline is not None and use_base:
            gates.extend(_baseline_gates(row, spec, baseline, lat_skip, dice_skip, class_skip))
    for target in sorted(set(spec.max_p95_ms) - matched):
        gates.append(_skip(f"p95_ms[{target}]", "no such row in these results", "ms"))
    return tuple(gates)


def update_baseline(results: BenchResults, path: Path) -> Path:
    """Write ``results`` (gates left out) as the new baseline, atomically; folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return results.with_gates(()).save(path)
