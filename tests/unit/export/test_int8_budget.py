"""The INT8 guard's default budget (0.3 pt mean, 1 pt per class), its switches, the export
summary table built from a manifest, and the roofline's work and peak."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.bench.roofline import cpu_fp32_peak, onnx_gflop_per_slice, share_of_peak
from medseg.bundle import Manifest
from medseg.cli.export import _budget
from medseg.errors import ConfigError
from medseg.export.accuracy import scored
from medseg.export.guard import DEFAULT_BUDGET, Budget
from medseg.export.options import ExportOptions
from medseg.export.summary import export_summary, write_summary


def test_default_budget_checks_the_mean_and_the_worst_class() -> None:
    labels = np.zeros((2, 2), dtype=np.uint8)
    fp32 = scored({"CSF": 0.90, "GM": 0.97, "WM": 0.96}, labels, None)
    thin_class_lost = scored({"CSF": 0.885, "GM": 0.975, "WM": 0.965}, labels, fp32)
    assert thin_class_lost.worst_class_drop_pts == pytest.approx(1.5)
    assert thin_class_lost.dice_drop_pts < 0.3  # a good mean...
    assert not DEFAULT_BUDGET.met(thin_class_lost)  # ...hides a lost class: refused
    fine = scored({"CSF": 0.899, "GM": 0.969, "WM": 0.96}, labels, fp32)
    assert DEFAULT_BUDGET.met(fine) and fine.worst_class_drop_pts == pytest.approx(0.1)
    assert Budget(None, None).met(thin_class_lost) and not Budget(None, None).active
    assert DEFAULT_BUDGET.describe() == "0.3 pt mean / 1 pt per class"
    with pytest.raises(ConfigError, match="mean_pts -1"):
        Budget(-1.0, None)


def test_export_options_guard_by_default(toy_data: Path) -> None:
    options = ExportOptions(int8=True, calib_data=toy_data)
    assert options.budget == DEFAULT_BUDGET
    assert options.int8_backend == "onnxruntime"  # the Q/DQ file: TensorRT's arithmetic
    off = ExportOptions(int8=True, calib_data=toy_data, max_dice_drop=None, max_class_drop=None)
    assert not off.budget.active
    with pytest.raises(ConfigError, match="--max-class-drop -1"):
        ExportOptions(int8=True, calib_data=toy_data, max_class_drop=-1.0)


def test_cli_budget_values() -> None:
    assert _budget("none", "--max-dice-drop", True) is None
    assert _budget("0.5", "--max-dice-drop", True) == 0.5
    with pytest.raises(ConfigError, match="--max-dice-drop 'x' must be points"):
        _budget("x", "--max-dice-drop", True)
    with pytest.raises(ConfigError, match="use it with --int8"):
        _budget("0.3", "--max-class-drop", False)


def test_summary_rows_of_the_demo_bundle(demo_bundle: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(demo_bundle)
    rows = export_summary(manifest)
    running = {(r.backend, r.precision): r for r in rows if r.runs}
    assert set(running) >= {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    int8 = running[("onnxruntime", "int8")]
    assert int8.file == "model.int8.cpu.onnx" and int8.size_mb and int8.size_mb > 0
    # the file ONNX Runtime does not run for int8 is a row too, marked so
    others = [r for r in rows if r.precision == "int8" and not r.runs]
    assert {r.file for r in others} >= {"model.int8.onnx"}
    copy = tmp_path / "b"
    copy.mkdir()
    path = write_summary(manifest, copy)
    assert len(json.loads(path.read_text())["rows"]) == len(rows)


def test_roofline_of_the_demo_network(demo_bundle: Path) -> None:
    gflop = onnx_gflop_per_slice(demo_bundle / "model.onnx")
    assert 7.0 < gflop < 7.8  # 7.40 GFLOP per 224x256 slice (issue 24)
    peak = cpu_fp32_peak(2)
    if peak["gflops"] is not None:
        assert "FMA" in peak["how"] and "GHz" in peak["how"]
        # 166 ms per slice at 157 GFLOP/s peak is 28 %
        assert share_of_peak(gflop, 1000 / 166, 156.8) == pytest.approx(28.4, abs=0.5)
    assert share_of_peak(None, 10.0, 100.0) is None
