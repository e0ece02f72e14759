"""Benchmark gates: budgets at their boundary, baseline comparison, TOML and flag parsing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bench_testutils import make_results, make_row

from medseg.bench.gates import (
    GateSpec,
    evaluate_gates,
    gate_warnings,
    parse_flag_pairs,
    update_baseline,
)
from medseg.bench.results import BenchResults, GateResult
from medseg.bench.stats import METHOD_MEDIAN_RANGE, METHOD_PERCENTAGE, compare_latency
from medseg.errors import ConfigError


def _by_name(gates: tuple[GateResult, ...]) -> dict[str, GateResult]:
    names = [g.name for g in gates]
    assert len(names) == len(set(names)), names
    return {g.name: g for g in gates}


# --- compare_latency -------------------------------------------------------------------


def test_clear_regression_fails() -> None:
    c = compare_latency([14.0, 14.2, 13.9], [10.0, 10.1, 9.9], 30.0)
    assert c.regressed and not c and c.method == METHOD_MEDIAN_RANGE
    assert (c.current_ms, c.baseline_ms) == (14.0, 10.0)
    assert c.change_pct == pytest.approx(40.0)
    assert "do not overlap" in c.detail


def test_overlapping_noisy_ranges_pass_despite_a_bigger_median_change() -> None:
    c = compare_latency([10.1, 15.0, 16.0], [10.0, 10.1, 10.2], 30.0)
    assert c.change_pct > 45 and not c.regressed and c
    assert "ranges overlap" in c.detail
    # one slow repeat on the current side cannot move the median
    assert not compare_latency([10.0, 10.1, 25.0], [10.0, 10.1, 10.2], 30.0).regressed


def test_single_repeat_uses_the_percentage_rule() -> None:
    slow = compare_latency([13.5], [10.0, 10.1, 9.9], 30.0)
    assert slow.regressed and slow.method == METHOD_PERCENTAGE
    assert not compare_latency([12.9], [10.0], 30.0).regressed
    assert not compare_latency([13.0], [10.0], 30.0).regressed  # exactly at the budget


def test_improvement_passes_and_bad_input_is_refused() -> None:
    c = compare_latency([7.0, 7.1, 7.2], [10.0, 10.1, 9.9], 0.0)
    assert not c.regressed and c.change_pct == pytest.approx(-29.0)
    with pytest.raises(ConfigError, match=">= 0"):
        compare_latency([1.0], [1.0], -1.0)
    with pytest.raises(ConfigError, match="baseline repeat p50s"):
        compare_latency([1.0], [], 10.0)


# --- gates on one run ------------------------------------------------------------------


def test_dice_drop_boundary_and_message() -> None:
    results = make_results()  # int8 drop 1.5 pts, fp16 drop 0.2 pts
    gates = _by_name(evaluate_gates(results, GateSpec(max_dice_drop_pts={"int8": 1.5})))
    assert set(gates) == {"dice_drop[onnxruntime.int8.b1]", "dice_drop[onnxruntime.int8.b8]"}
    assert all(gates.values())
    gates = _by_name(evaluate_gates(results, GateSpec(max_dice_drop_pts={"int8": 1.49})))
    g = gates["dice_drop[onnxruntime.int8.b1]"]
    assert not g and g.measured == pytest.approx(1.5) and g.allowed == 1.49 and g.unit == "pts"
    assert g.message == "dice_drop[onnxruntime.int8.b1]: 1.50 pts > allowed 1.49 pts"


def test_impossible_dice_drop_gate_fails_naming_the_gate() -> None:
    spec = GateSpec.from_flags(max_dice_drop={"fp16": -1.0})
    gates = evaluate_gates(make_results(), spec)
    assert [g.name for g in gates if not g] == [
        "dice_drop[onnxruntime.fp16.b1]",
        "dice_drop[onnxruntime.fp16.b8]",
    ]
    assert not make_results().with_gates(gates)
    assert "0.20 pts > allowed -1.00 pts" in gates[0].message


def test_dice_drop_without_fp32_reference_fails_as_not_measured() -> None:
    results = make_results([make_row("int8", drop=None)])
    (g,) = evaluate_gates(results, GateSpec(max_dice_drop_pts={"int8": 1.5}))
    assert not g and "not measured" in g.message


def test_min_dice_boundary() -> None:
    results = make_results()
    assert all(evaluate_gates(results, GateSpec(min_dice=0.935)))
    gates = _by_name(evaluate_gates(results, GateSpec(min_dice=0.936)))
    failed = sorted(n for n, g in gates.items() if not g)
    assert failed == ["min_dice[onnxruntime.int8.b1]", "min_dice[onnxruntime.int8.b8]"]
    assert gates["min_dice[onnxruntime.int8.b1]"].message == (
        "min_dice[onnxruntime.int8.b1]: 0.9350 < allowed 0.9360"
    )
    assert len(gates) == 6


def test_p95_per_backend_precision_and_per_batch() -> None:
    results = make_results()  # p95 = 1.2 x p50: fp32 b1 12 ms, fp32 b8 72 ms
    spec = GateSpec(max_p95_ms={"onnxruntime.fp32": 12.0, "onnxruntime.fp32.b8": 71.9})
    gates = _by_name(evaluate_gates(results, spec))
    assert set(gates) == {"p95_ms[onnxruntime.fp32.b1]", "p95_ms[onnxruntime.fp32.b8]"}
    assert gates["p95_ms[onnxruntime.fp32.b1]"]  # exactly at the budget
    b8 = gates["p95_ms[onnxruntime.fp32.b8]"]  # the .bN budget wins over the general one
    assert not b8 and b8.message == "p95_ms[onnxruntime.fp32.b8]: 72.00 ms > allowed 71.90 ms"
    spec = GateSpec(max_p95_ms={"onnxruntime.fp32.b8": 72.0, "tensorrt.int8": 5.0})
    gates = _by_name(evaluate_gates(results, spec))
    assert gates["p95_ms[onnxruntime.fp32.b8]"]
    assert gates["p95_ms[tensorrt.int8]"].skipped  # no such row: reported, not failed


def test_status_gates_only_for_targeted_rows() -> None:
    rows = [
        *make_results().rows,
        make_row("int8", 1, backend="tensorrt", status="skipped", reason="TensorRT not installed"),
        make_row("fp16", 1, backend="tensorrt", status="error", reason="engine build failed"),
    ]
    results = make_results(rows)
    assert all(evaluate_gates(results, GateSpec(max_p95_ms={"onnxruntime.fp32": 100.0})))
    gates = _by_name(evaluate_gates(results, GateSpec(min_dice=0.5)))
    skipped, error = gates["status[tensorrt.int8.b1]"], gates["status[tensorrt.fp16.b1]"]
    assert skipped.skipped and skipped and "TensorRT not installed" in skipped.message
    assert not error and "engine build failed" in error.message
    assert "min_dice[tensorrt.fp16.b1]" not in gates


# --- baseline gates --------------------------------------------------------------------


def _slower(results: BenchResults, factor: float, dice_delta: float = 0.0) -> BenchResults:
    rows = []
    for r in results.rows:
        assert r.accuracy is not None and r.latency is not None
        rows.append(
            make_row(
                r.precision,
                r.batch,
                dice=r.accuracy.dice_mean + dice_delta,
                drop=r.accuracy.dice_drop_pts,
                p50=r.latency.p50_ms * factor,
            )
        )
    return replace(results, rows=tuple(rows))


BASELINE_SPEC = GateSpec(max_latency_regression_pct=30.0, max_dice_regression_pts=0.2)


def test_baseline_latency_regression_and_dice() -> None:
    baseline = make_results()
    same = evaluate_gates(baseline, BASELINE_SPEC, baseline)
    assert len(same) == 12 and all(same) and not any(g.skipped for g in same)
    slow = _by_name(evaluate_gates(_slower(baseline, 1.5), BASELINE_SPEC, baseline))
    g = slow["baseline_latency[onnxruntime.int8.b8]"]
    assert not g and g.measured == pytest.approx(50.0) and g.unit == "%"
    assert g.message.startswith("baseline_latency[onnxruntime.int8.b8]: +50.0 % > allowed 30.0 %")
    assert all(slow[n] for n in slow if n.startswith("baseline_dice"))
    assert all(evaluate_gates(_slower(baseline, 1.3), BASELINE_SPEC, baseline))  # at the budget


def test_baseline_dice_regression_boundary() -> None:
    baseline = make_results()
    at_budget = evaluate_gates(_slower(baseline, 1.0, -0.002), BASELINE_SPEC, baseline)
    assert all(at_budget)  # 0.2 pts exactly
    worse = _by_name(evaluate_gates(_slower(baseline, 1.0, -0.003), BASELINE_SPEC, baseline))
    g = worse["baseline_dice[onnxruntime.fp16.b1]"]
    assert not g and g.measured == pytest.approx(0.3)
    assert g.message == (
        "baseline_dice[onnxruntime.fp16.b1]: 0.30 pts > allowed 0.20 pts "
        "(mean Dice 0.9450 vs baseline 0.9480)"
    )


def test_other_bundle_skips_latency_gates_but_keeps_accuracy_gates() -> None:
    baseline = make_results(fingerprint="sha256-old-bundle")
    current = _slower(make_results(fingerprint="sha256-new-bundle"), 2.0, -0.01)
    warnings = gate_warnings(current, BASELINE_SPEC, baseline)
    assert len(warnings) == 1 and "baseline from another bundle (fingerprint" in warnings[0]
    assert "relative latency gates skipped, accuracy gates kept" in warnings[0]
    gates = _by_name(evaluate_gates(current, BASELINE_SPEC, baseline))
    latency = [g for n, g in gates.items() if n.startswith("baseline_latency")]
    dice = [g for n, g in gates.items() if n.startswith("baseline_dice")]
    assert len(latency) == 6 and all(g.skipped and g.passed for g in latency)
    assert "another bundle" in latency[0].message
    assert len(dice) == 6 and not any(dice)


def test_other_machine_skips_latency_gates() -> None:
    baseline = make_results(gpu="NVIDIA H100")
    current = _slower(make_results(gpu=None), 2.0)
    (warning,) = gate_warnings(current, BASELINE_SPEC, baseline)
    assert "another machine" in warning and "NVIDIA H100" in warning
    gates = evaluate_gates(current, BASELINE_SPEC, baseline)
    assert all(gates)
    assert all(g.skipped for g in gates if g.name.startswith("baseline_latency"))
    assert not any(g.skipped for g in gates if g.name.startswith("baseline_dice"))


def test_baseline_row_missing_or_other_dataset_is_skipped() -> None:
    baseline = make_results([r for r in make_results().rows if r.batch == 1])
    gates = _by_name(evaluate_gates(make_results(), BASELINE_SPEC, baseline))
    g = gates["baseline_latency[onnxruntime.fp32.b8]"]
    assert g.skipped and "no such row in the baseline" in g.message
    other = make_results(cases=10)
    gates = _by_name(evaluate_gates(_slower(other, 1.0, -0.05), BASELINE_SPEC, make_results()))
    assert gates["baseline_dice[onnxruntime.fp32.b1]"].skipped
    assert "another dataset" in gates["baseline_dice[onnxruntime.fp32.b1]"].message
    assert gate_warnings(other, BASELINE_SPEC, None) == (
        "[baseline] budgets are set but no baseline was given: baseline gates skipped",
    )


def test_update_baseline_writes_results_without_gates(tmp_path: Path) -> None:
    results = make_results().with_gates([GateResult("g", False, 1.0, 0.0, "", "g: failed")])
    path = update_baseline(results, tmp_path / "baselines" / "ci-cpu.json")
    assert BenchResults.load(path) == results.with_gates(())


# --- TOML and flags --------------------------------------------------------------------

CI_CPU_TOML = """
[accuracy]
min_dice = 0.90
max_dice_drop_pts = { fp16 = 0.5, int8 = 1.5 }
[latency]
max_p95_ms = { "onnxruntime.fp32" = 900.0, "tensorrt.int8.b8" = 5.0 }
[baseline]
max_latency_regression_pct = 30.0
max_dice_regression_pts = 0.2
"""


def test_toml_parses(tmp_path: Path) -> None:
    path = tmp_path / "ci-cpu.toml"
    path.write_text(CI_CPU_TOML)
    spec = GateSpec.from_toml(path)
    assert spec == GateSpec(
        min_dice=0.9,
        max_dice_drop_pts={"fp16": 0.5, "int8": 1.5},
        max_p95_ms={"onnxruntime.fp32": 900.0, "tensorrt.int8.b8": 5.0},
        max_latency_regression_pct=30.0,
        max_dice_regression_pts=0.2,
    )
    assert GateSpec.from_dict(spec.to_dict()) == spec
    assert GateSpec().empty and not spec.empty


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[accuracy]\nmin_dic = 0.9\n",
            r"unknown key accuracy\.min_dic; accepted: min_dice, max_dice_drop_pts",
        ),
        ("[speed]\nx = 1\n", r"unknown key speed; accepted: accuracy, latency, baseline"),
        ('[accuracy]\nmin_dice = "high"\n', r"accuracy\.min_dice must be a number, got str 'high'"),
        ("[accuracy]\nmin_dice = 1.5\n", r"min_dice must be a Dice in \[0, 1\], got 1.5"),
        ("[accuracy]\nmin_dice = true\n", r"min_dice must be a number, got bool True"),
        ("[accuracy]\nmin_dice = inf\n", r"accuracy\.min_dice must be a finite number, got inf"),
        ("accuracy = 1\n", r"accuracy must be an object, got int 1"),
        ("[latency]\nmax_p95_ms = {}\n", "max_p95_ms must be a non-empty table"),
        (
            "[accuracy]\nmax_dice_drop_pts = { int4 = 1.0 }\n",
            "accuracy.max_dice_drop_pts: key 'int4' must be one of fp16, bf16, int8",
        ),
        ("[accuracy]\nmax_dice_drop_pts = { fp32 = 1.0 }\n", "fp32 is the reference"),
        ("[accuracy]\nmax_dice_drop_pts = 1.0\n", "must be a non-empty table"),
        ('[latency]\nmax_p95_ms = { "onnxruntime.fp32" = 0 }\n', r"onnxruntime.fp32 must be ms"),
        (
            '[latency]\nmax_p95_ms = { "tflite.fp32" = 5.0 }\n',
            "latency.max_p95_ms: key 'tflite.fp32' must be",
        ),
        ('[latency]\nmax_p95_ms = { "tensorrt.int8.8" = 5.0 }\n', "backend.precision.bN"),
        ("[baseline]\nmax_latency_regression_pct = -5\n", "max_latency_regression_pct must be"),
        ("[baseline]\nmax_dice_regression_pts = -0.1\n", "max_dice_regression_pts must be >= 0"),
        ("[accuracy\n", "is not valid TOML"),
    ],
)
def test_toml_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gates.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        GateSpec.from_toml(path)
    assert str(path) in str(exc.value)


def test_negative_dice_drop_budget_is_valid_syntax(tmp_path: Path) -> None:
    path = tmp_path / "impossible.toml"
    path.write_text("[accuracy]\nmax_dice_drop_pts = { int8 = -1 }\n")
    assert GateSpec.from_toml(path).max_dice_drop_pts == {"int8": -1.0}
    with pytest.raises(ConfigError, match="does not exist"):
        GateSpec.from_toml(tmp_path / "missing.toml")


def test_flags_override_file(tmp_path: Path) -> None:
    path = tmp_path / "ci-cpu.toml"
    path.write_text(CI_CPU_TOML)
    flags = GateSpec.from_flags(max_dice_drop={"int8": 1.0}, max_p95_ms={"onnxruntime.fp32": 5.0})
    merged = GateSpec.from_toml(path).merge(flags)
    assert merged.max_dice_drop_pts == {"fp16": 0.5, "int8": 1.0}
    assert merged.max_p95_ms == {"onnxruntime.fp32": 5.0, "tensorrt.int8.b8": 5.0}
    assert merged.min_dice == 0.9 and merged.max_latency_regression_pct == 30.0
    assert GateSpec.from_toml(path).merge(GateSpec(min_dice=0.95)).min_dice == 0.95
    with pytest.raises(ConfigError, match="command line: --min-dice must be a Dice"):
        GateSpec.from_flags(min_dice=2.0)
    with pytest.raises(ConfigError, match="--max-dice-drop: key 'fp8' must be one of fp16"):
        GateSpec.from_flags(max_dice_drop={"fp8": 1.0})


def test_parse_flag_pairs() -> None:
    pairs = parse_flag_pairs(["int8=1.5,fp16=0.5", "int8=-1"], "--max-dice-drop")
    assert pairs == {"int8": -1.0, "fp16": 0.5}  # the last one wins
    assert GateSpec.from_flags(max_dice_drop=pairs).max_dice_drop_pts == pairs
    for bad in ("int8", "int8=high", "=1"):
        with pytest.raises(ConfigError, match="--max-dice-drop takes PRECISION=PTS"):
            parse_flag_pairs([bad], "--max-dice-drop")
    # the example is the form the option takes (issue 11: it showed int8=1.5 for latency)
    with pytest.raises(ConfigError, match=r"BACKEND\.PRECISION\[\.bN\]=MS .*onnxruntime\.fp32="):
        parse_flag_pairs(["900"], "--max-p95-ms")


def test_int8_baseline_dice_is_per_cpu_class() -> None:
    """An INT8 baseline recorded on an AMX machine says nothing of an AVX2 one (issue 24):
    its baseline Dice gate is skipped there; FP32/FP16 stay compared."""

    def on(results: BenchResults, cpu_class: str) -> BenchResults:
        machine = {**results.machine, "cpu_features": {"cpu_class": cpu_class}}
        return replace(results, machine=machine)

    baseline = on(make_results(), "amx")
    current = on(_slower(make_results(), 1.0, -0.01), "avx2")
    gates = _by_name(evaluate_gates(current, BASELINE_SPEC, baseline))
    int8 = gates["baseline_dice[onnxruntime.int8.b8]"]
    assert int8.skipped and "CPU class amx, this CPU is avx2" in int8.message
    assert not gates["baseline_dice[onnxruntime.fp16.b1]"].skipped
    same = _by_name(
        evaluate_gates(on(_slower(make_results(), 1.0, -0.01), "amx"), BASELINE_SPEC, baseline)
    )
    assert not same["baseline_dice[onnxruntime.int8.b8]"]  # same class: compared, and failed
