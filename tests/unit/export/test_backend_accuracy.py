"""Accuracy per (backend, precision) in the manifest, and the INT8 guard on OpenVINO."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.bundle import Manifest
from medseg.errors import ConfigError, ExportError, MissingDependencyError
from medseg.export import ExportOptions, export_bundle
from medseg.runtime.cpu import cpu_features

pytest.importorskip("modelopt")
pytest.importorskip("openvino")


def test_fresh_export_records_accuracy_per_backend(tiny_bundle: Path) -> None:
    manifest = Manifest.load(tiny_bundle)
    by_backend = manifest.backend_accuracy
    assert set(by_backend) == {"onnxruntime", "openvino"}
    expected = {"fp32", "fp16", "int8"} | ({"bf16"} if cpu_features().bf16 else set())
    assert set(by_backend["openvino"]) == expected
    assert set(by_backend["onnxruntime"]) == {"fp32", "fp16", "int8"}
    for backend, by_precision in by_backend.items():
        assert by_precision["fp32"]["dice_drop_pts"] == 0.0
        for precision, record in by_precision.items():
            assert record["reference"] == f"{backend} fp32"
            assert set(record["dice_per_class"]) == {"disc", "ring"}
            assert 0.0 <= record["argmax_agreement"] <= 1.0, (backend, precision)
    # ONNX Runtime's rows are the precision entries' own accuracy; its INT8 is the CPU file's
    ort = by_backend["onnxruntime"]["fp16"]
    assert ort["dice_mean"] == manifest.precisions["fp16"].accuracy["dice_mean"]
    cpu_file = manifest.precisions["int8"].details["cpu_file"]
    assert by_backend["onnxruntime"]["int8"]["file"] == "model.int8.cpu.onnx"
    assert by_backend["onnxruntime"]["int8"]["dice_mean"] == cpu_file["accuracy"]["dice_mean"]
    assert cpu_file["accuracy_by_backend"]["onnxruntime"] == cpu_file["accuracy"]
    # OpenVINO: both INT8 files measured on it; it runs the one that loses less
    ov = by_backend["openvino"]["int8"]
    compared = ov["files_compared"]
    assert set(compared) == {"model.int8.onnx", "model.int8.cpu.onnx"}
    assert (
        compared["model.int8.cpu.onnx"]
        == cpu_file["accuracy_by_backend"]["openvino"]["dice_drop_pts"]
    )
    assert ov["file"] == min(compared, key=lambda f: compared[f])
    assert ov["dice_drop_pts"] == min(compared.values())
    saved = json.loads((tiny_bundle / "medseg.json").read_text())
    assert saved["backend_accuracy"]["openvino"]["int8"]["dice_mean"] == pytest.approx(
        by_backend["openvino"]["int8"]["dice_mean"]
    )


def test_bundles_without_backend_accuracy_still_load(demo_bundle: Path) -> None:
    data = json.loads((demo_bundle / "medseg.json").read_text())
    data.pop("backend_accuracy", None)
    assert Manifest.from_dict(data).backend_accuracy == {}
    data["backend_accuracy"] = {"openvino": {"int4": {}}}
    with pytest.raises(ConfigError, match="backend_accuracy"):
        Manifest.from_dict(data)


def test_guard_forced_on_openvino(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    """A zero budget on OpenVINO: the guard ranks and re-measures on OpenVINO itself."""
    lines: list[str] = []
    options = ExportOptions(
        int8=True,
        calib_data=toy_data,
        calib_slices=16,
        max_dice_drop=0.0,
        guard_backend="openvino",
    )
    try:
        manifest = export_bundle(
            toy_runs["attention-fusion"],
            tmp_path / "b",
            options,
            lambda event: lines.append(event.message),
        )
    except ExportError as exc:  # even all-but-one layer in FP32 missed it on OpenVINO
        assert "tried" in str(exc)
        assert any("measured on openvino" in line for line in lines)
        return
    details = manifest.precisions["int8"].details
    assert details["guard_backend"] == "openvino"
    attempts = details["guard_attempts"]
    guard_lines = [ln for ln in lines if "kept in FP32: Dice drop" in ln]
    # the Q/DQ file's guard runs on OpenVINO; the CPU INT8 file's always on ONNX Runtime
    assert all("on openvino" in ln for ln in guard_lines if ln.startswith("model.int8.onnx "))
    assert any(ln.startswith("model.int8.onnx ") for ln in guard_lines)
    if not attempts[0]["met"]:
        assert any("measured on openvino" in line for line in lines)
    chosen = next(
        a for a in attempts if a["num_excluded"] == len(details["kept_in_higher_precision"])
    )
    ov_int8 = manifest.backend_accuracy["openvino"]["int8"]
    # OpenVINO runs the guarded file or the CPU file, whichever loses less on it: within budget
    assert chosen["met"] and ov_int8["dice_drop_pts"] <= 0.0
    measured = ov_int8.get("files_compared", {"model.int8.onnx": ov_int8["dice_drop_pts"]})
    assert measured["model.int8.onnx"] == pytest.approx(chosen["dice_drop_pts"])
    if "cpu_file" not in details:  # it missed the budget on ONNX Runtime: not kept
        assert not (tmp_path / "b" / "model.int8.cpu.onnx").exists()
        assert any("over the 0 pt budget on onnxruntime" in line for line in lines)
        assert ov_int8["file"] == "model.int8.onnx"


def test_guard_backend_must_be_installed(monkeypatch: pytest.MonkeyPatch, toy_data: Path) -> None:
    monkeypatch.setattr("medseg.export.options.installed_cpu_backends", lambda: ("onnxruntime",))
    with pytest.raises(MissingDependencyError, match=r"medseg-edge\[openvino\]"):
        ExportOptions(int8=True, calib_data=toy_data, guard_backend="openvino")
    assert ExportOptions(int8=True, calib_data=toy_data).int8_backend == "onnxruntime"
    with pytest.raises(ConfigError, match="accepted onnxruntime, openvino"):
        ExportOptions(int8=True, calib_data=toy_data, guard_backend="tensorrt")
    with pytest.raises(ConfigError, match="use it with --int8"):
        ExportOptions(guard_backend="onnxruntime")
