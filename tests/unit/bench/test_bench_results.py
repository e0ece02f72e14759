"""Benchmark results: latency statistics, strict JSON round trips and schema errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_testutils import make_results, make_row

from medseg.bench.results import BenchResults, GateResult, LatencyStats, VariantResult
from medseg.bench.stats import percentile
from medseg.errors import ConfigError


def test_latency_stats_hand_computed_percentiles() -> None:
    stats = LatencyStats.from_samples([float(v) for v in range(100, 0, -1)])  # order is irrelevant
    # linear method: position q/100 * (n - 1) between sorted values 1..100
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p95_ms == pytest.approx(95.05)
    assert stats.p99_ms == pytest.approx(99.01)
    assert (stats.mean_ms, stats.min_ms, stats.max_ms, stats.n) == (50.5, 1.0, 100.0, 100)
    single = LatencyStats.from_samples([7.0])
    assert single.p50_ms == single.p99_ms == single.max_ms == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 25) == pytest.approx(1.75)


@pytest.mark.parametrize("samples", [[], [1.0, math.nan], [1.0, math.inf], [2.0, -1.0]])
def test_latency_stats_bad_samples(samples: list[float]) -> None:
    with pytest.raises(ConfigError, match="latency samples"):
        LatencyStats.from_samples(samples)


def test_rows_are_keyed_not_positional() -> None:
    results = make_results()
    row = results.row("onnxruntime", "int8", 8)
    assert row is not None and row.key == ("onnxruntime", "int8", 8)
    assert row.label == "onnxruntime int8 b8" and row.slug == "onnxruntime.int8.b8"
    assert results.row("tensorrt", "int8", 8) is None
    with pytest.raises(ConfigError, match="two result rows for onnxruntime fp32 b1"):
        make_results([make_row(), make_row()])
    with pytest.raises(ConfigError, match="precision 'int4' is not one of fp32, fp16, bf16, int8"):
        VariantResult("onnxruntime", "int4", 1)


def test_json_round_trip_is_identical(tmp_path: Path) -> None:
    gate = GateResult("min_dice[onnxruntime.fp32.b1]", True, 0.95, 0.9, "dice", "ok")
    worst = {"case_id": "mni", "axis": 2, "index": 40, "dice": 0.8, "png": "worst/a.png"}
    rows = [*make_results().rows, make_row("fp32", 2, worst=worst, repeats=(10.0,))]
    results = make_results(rows).with_gates([gate])
    path = results.save(tmp_path / "results.json")
    assert BenchResults.load(path) == results
    assert BenchResults.from_dict(json.loads(path.read_text())) == results


def test_nan_is_written_as_null_and_read_back(tmp_path: Path) -> None:
    row = make_row()
    assert row.accuracy is not None
    acc = row.accuracy.__class__(
        **{**row.accuracy.__dict__, "hd95_mm": math.nan, "dice_per_class": {"csf": math.nan}}
    )
    nan_row = VariantResult("torch", "fp32", 1, accuracy=acc, slices_per_s=np.float64(math.nan))
    path = make_results([nan_row]).save(tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text

    def refuse(token: str) -> Any:
        raise AssertionError(f"non-strict JSON token {token}")

    raw = json.loads(text, parse_constant=refuse)
    assert raw["rows"][0]["accuracy"]["hd95_mm"] is None
    assert raw["rows"][0]["accuracy"]["dice_per_class"]["csf"] is None
    loaded = BenchResults.load(path).rows[0]
    assert loaded.accuracy is not None and loaded.accuracy.hd95_mm is None  # optional -> None
    assert math.isnan(loaded.accuracy.dice_per_class["csf"])  # required float -> NaN
    assert loaded.slices_per_s is None


def _saved(tmp_path: Path, edit: Any) -> Path:
    data = make_results().to_dict()
    edit(data)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(data))
    return path


def test_wrong_schema_version_says_rerun(tmp_path: Path) -> None:
    path = _saved(tmp_path, lambda d: d.update(schema_version=99))
    with pytest.raises(ConfigError, match="schema_version 99 is not supported") as exc:
        BenchResults.load(path)
    assert str(path) in str(exc.value) and "re-run `medseg bench`" in str(exc.value)


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    path = _saved(tmp_path, lambda d: d["rows"][1]["latency"].pop("p95_ms"))
    with pytest.raises(ConfigError, match=r"missing key rows\[1\]\.latency\.p95_ms") as exc:
        BenchResults.load(path)
    assert str(exc.value).startswith(str(path))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["rows"][0].update(batch="1"), r"rows\[0\]\.batch must be an integer"),
        (lambda d: d["rows"][0].update(bogus=1), r"unknown key rows\[0\]\.bogus"),
        (lambda d: d["rows"][0].update(backend="tflite"), r"rows\[0\]: backend 'tflite' is not"),
        (lambda d: d.update(rows={}), "rows must be a list"),
        (
            lambda d: d["rows"][0]["accuracy"]["dice_per_class"].update(gm="high"),
            r"rows\[0\]\.accuracy\.dice_per_class\.gm must be a number",
        ),
        (
            lambda d: d["rows"][0]["accuracy"].update(worst_slice={"case_id": "x"}),
            "worst_slice lacks",
        ),
        (lambda d: d["rows"][0].update(repeat_p50_ms=[1.0, "x"]), r"repeat_p50_ms\[1\]"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, edit: Any, message: str) -> None:
    path = _saved(tmp_path, edit)
    with pytest.raises(ConfigError, match=message):
        BenchResults.load(path)


def test_load_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        BenchResults.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json is not valid JSON"):
        BenchResults.load(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="top level"):
        BenchResults.load(bad)
