"""Benchmark reports: the tables, results.json, report.md, junit.xml and the PNG plot."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from bench_testutils import make_results, make_row
from rich.console import Console

from medseg.bench.gates import GateSpec, evaluate_gates
from medseg.bench.report import (
    COLUMNS,
    gate_rows,
    pareto_front,
    results_rows,
    results_title,
    skip_reasons,
    write_report,
)
from medseg.bench.results import BenchResults
from medseg.cli.tables import gates_table, results_table
from medseg.errors import ConfigError
from medseg.outputs import MARKER_NAME

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _gated() -> BenchResults:
    worst = {"case_id": "mni152", "axis": 2, "index": 41, "dice": 0.71, "png": "worst/int8.png"}
    rows = [
        *make_results().rows,
        make_row("int8", 1, backend="tensorrt", status="skipped", reason="TensorRT not installed"),
        make_row("fp16", 2, drop=0.1, p50=20.0, worst=worst),
    ]
    results = make_results(rows)
    spec = GateSpec(min_dice=0.9, max_dice_drop_pts={"int8": 1.0, "fp16": 0.5})
    return results.with_gates(evaluate_gates(results, spec))


def test_pareto_front_on_hand_made_points() -> None:
    points = [(10.0, 0.95), (5.0, 0.93), (3.0, 0.90), (6.0, 0.92), (12.0, 0.94), (3.0, 0.89)]
    # (6, .92) is beaten by (5, .93); (12, .94) by (10, .95); (3, .89) by (3, .90)
    assert pareto_front(points) == [2, 1, 0]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # ties dominate nothing
    assert pareto_front([(float("nan"), 0.9), (2.0, 0.8)]) == [1]
    assert pareto_front([]) == []


def test_results_table_rows_sorted_by_backend_precision_batch() -> None:
    results = _gated()
    table = results_table(results)
    assert [c.header for c in table.columns] == list(COLUMNS)
    columns = [[str(cell) for cell in column.cells] for column in table.columns]
    assert list(zip(*columns[:3], strict=True)) == [
        ("onnxruntime", "fp32", "1"),
        ("onnxruntime", "fp32", "8"),
        ("onnxruntime", "fp16", "1"),
        ("onnxruntime", "fp16", "2"),
        ("onnxruntime", "fp16", "8"),
        ("onnxruntime", "int8", "1"),
        ("onnxruntime", "int8", "8"),
        ("tensorrt", "int8", "1"),
    ]
    assert columns[3][0] == "✅" and columns[3][-1] == "❎ skipped"
    assert columns[6][5] == "-1.50"  # dDice: int8 b1 is 1.5 pts worse than fp32
    assert columns[5][-1] == "—"
    out = io.StringIO()
    Console(file=out, width=200).print(results_table(results), gates_table(results.gates))
    text = out.getvalue()
    assert "TensorRT not installed" in text and "dice_drop[onnxruntime.int8.b1]" in text


def test_the_library_returns_the_table_as_strings() -> None:
    """What the CLI draws comes from the library as plain strings, row for row."""
    results = _gated()
    rows = results_rows(results)
    table = results_table(results)
    drawn = [[str(c) for c in col.cells] for col in table.columns]
    assert rows == [list(r) for r in zip(*drawn, strict=True)]
    assert all(len(r) == len(COLUMNS) for r in rows)
    assert results_title(results) == "medseg bench: mni-attn"
    assert skip_reasons(results) == ["tensorrt int8 b1: skipped (TensorRT not installed)"]
    gates = gate_rows(results.gates)
    assert ("dice_drop[onnxruntime.int8.b1]", "1.50 pts", "1.00 pts", "❌ FAIL") in gates
    assert len(gates) == len(results.gates)


def test_write_report_files(tmp_path: Path) -> None:
    results = _gated()
    assert not results  # int8 drops 1.5 pts > 1.0
    paths = write_report(results, tmp_path / "bench")
    assert set(paths) == {"results", "report", "junit", "plot"}
    assert all(p.is_file() and p.parent == tmp_path / "bench" for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted(
        ["results.json", "report.md", "junit.xml", "accuracy_vs_latency.png", MARKER_NAME]
    )  # atomic writes leave no temporary files; the marker lets a rerun write there again
    assert BenchResults.load(paths["results"]) == results
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC


def test_junit_has_one_testcase_per_gate(tmp_path: Path) -> None:
    results = _gated()
    junit = write_report(results, tmp_path)["junit"]
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "medseg.bench.gates"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [g.name for g in results.gates]
    assert all(c.get("classname") == "medseg.bench.gates" for c in cases)
    failed = [c for c in cases if c.find("failure") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    assert [c.get("name") for c in failed] == [g.name for g in results.failed_gates]
    assert [c.get("name") for c in skipped] == ["status[tensorrt.int8.b1]"]
    assert suite.get("tests") == str(len(cases)) == root.get("tests")
    assert suite.get("failures") == "2" and suite.get("skipped") == "1"
    failure = failed[0].find("failure")
    assert failure is not None
    assert failure.get("message") == "dice_drop[onnxruntime.int8.b1]: 1.50 pts > allowed 1.00 pts"


def test_report_markdown(tmp_path: Path) -> None:
    results = _gated()
    text = write_report(results, tmp_path)["report"].read_text(encoding="utf-8")
    assert "| " + " | ".join(COLUMNS) + " |" in text
    for row in results.rows:
        assert f"| {row.backend} | {row.precision} | {row.batch} |" in text
    assert "**FAILED**: 2 of" in text
    assert "❌ FAIL `dice_drop[onnxruntime.int8.b8]`" in text
    assert "✅ pass `min_dice[onnxruntime.fp32.b1]`" in text
    assert "Test CPU 3000" in text and "onnxruntime 1.20.0" in text and "iters: 50" in text
    assert "![accuracy vs latency](accuracy_vs_latency.png)" in text
    assert "onnxruntime fp16 b2: case mni152, axis 2 slice 41" in text
    assert "[int8.png](worst/int8.png)" in text
    assert "tensorrt int8 b1: skipped (TensorRT not installed)" in text


def test_report_without_gates_or_plottable_rows(tmp_path: Path) -> None:
    results = make_results([make_row("fp32", backend="tensorrt", status="error", reason="boom")])
    paths = write_report(results, tmp_path / "out")
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
    assert "No gates were configured." in paths["report"].read_text(encoding="utf-8")
    root = ET.parse(paths["junit"]).getroot()
    assert root.get("tests") == "0"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a folder"):
        write_report(results, tmp_path / "file")
    with pytest.raises(ConfigError, match="parent folder"):
        write_report(results, tmp_path / "no" / "such")


def test_log_scale_plot_with_wide_latency_range(tmp_path: Path) -> None:
    rows = [make_row("fp32", p50=500.0), make_row("int8", 8, dice=0.93, drop=2.0, p50=40.0)]
    paths = write_report(make_results(rows), tmp_path)
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC
