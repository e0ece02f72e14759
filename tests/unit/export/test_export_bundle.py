"""Export: a checkpoint becomes a bundle with ONNX FP32/FP16/INT8, parity and accuracy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from medseg.bundle import Manifest
from medseg.errors import ConfigError, DatasetError, ExportError
from medseg.events import Event
from medseg.export import ExportOptions, export_bundle

pytest.importorskip("modelopt")


def _quiet(_: str) -> None:
    pass


@pytest.mark.parametrize("arch", ["unet", "attention-unet", "attention-fusion"])
def test_every_architecture_exports_with_onnxruntime_parity(
    arch: str, toy_runs: dict[str, Path], tmp_path: Path
) -> None:
    manifest = export_bundle(toy_runs[arch], tmp_path / "b", ExportOptions(), _quiet)
    fp32 = manifest.precisions["fp32"]
    assert fp32.parity["max_abs_diff"] < 1e-3 and fp32.parity["argmax_agreement"] >= 0.999
    model = onnx.load(str(tmp_path / "b" / "model.onnx"))
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets[""] >= 18
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["medseg.output"])["classes"] == {"background": 0, "disc": 1, "ring": 2}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 32, 48]
    again = Manifest.load(tmp_path / "b")
    assert again == manifest
    assert again.onnx_path(tmp_path / "b", "fp32").is_file()  # sha256 verified


def test_full_bundle_with_fp16_and_int8(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    options = ExportOptions(
        fp16=True,
        int8=True,
        calib_data=toy_data,
        calib_slices=16,
        max_dice_drop=None,
        max_class_drop=None,
    )
    manifest = export_bundle(toy_runs["attention-fusion"], out, options, _quiet)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "calibration.npz",
        "export-summary.json",  # file x backend x CPU class (medseg.export.summary)
        "medseg.json",
        "model.fp16.onnx",
        "model.int8.cpu.onnx",  # ONNX Runtime's QDQ form, for CPUs (no budget set: kept)
        "model.int8.onnx",
        "model.onnx",
    ]
    assert set(manifest.precisions) == {"fp32", "fp16", "int8"}
    int8 = onnx.load(str(out / "model.int8.onnx"))
    ops = [n.op_type for n in int8.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert manifest.precisions["int8"].details["quantized_nodes"]
    for precision, entry in manifest.precisions.items():
        acc = entry.accuracy
        assert set(acc["dice_per_class"]) == {"disc", "ring"}, precision
        assert 0 <= acc["argmax_agreement"] <= 1
    assert manifest.precisions["fp16"].accuracy["dice_drop_pts"] < 1.0
    assert manifest.calibration is not None and len(manifest.calibration["slice_ids"]) == 16
    calib = np.load(out / "calibration.npz")
    assert calib["images"].shape[0] == 16
    assert manifest.input.batch.min == 1 and manifest.input.height.opt == 32


def test_guard_fails_with_the_table_when_the_budget_is_impossible(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    """An impossible budget (below what even FP32 achieves) forces every fallback step."""
    from medseg.calibration import select_calibration_slices
    from medseg.data.samples import load_training_data
    from medseg.export.accuracy import evaluate_onnx
    from medseg.export.guard import guard_int8

    run = toy_runs["unet"]
    bundle = tmp_path / "fp32"
    export_bundle(run, bundle, ExportOptions(), _quiet)
    data = load_training_data(toy_data, 2, 0.2, 0)
    classes = {"disc": 1, "ring": 2}
    fp32 = bundle / "model.onnx"
    reference = evaluate_onnx(fp32, data.val, classes)
    calib = select_calibration_slices(data.train, classes, 16)
    lines: list[str] = []

    def one_point_worse(path: Path) -> Any:  # no attempt can meet a 0 pt budget
        accuracy = evaluate_onnx(path, data.val, classes, reference)
        return dataclasses.replace(accuracy, dice_drop_pts=accuracy.dice_drop_pts + 1.0)

    with pytest.raises(ExportError, match=r"cannot meet the 0 pt mean Dice-drop budget.*tried"):
        guard_int8(
            fp32,
            tmp_path / "int8.onnx",
            calib.images,
            "max",
            0.0,
            one_point_worse,
            lambda event: lines.append(event.message),
        )
    assert any("most sensitive layers" in line for line in lines)
    assert sum("kept in FP32" in line for line in lines) >= 3
    assert not (tmp_path / "int8.onnx").exists()


def test_tiny_budget_keeps_layers_in_fp32_until_met(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    options = ExportOptions(
        int8=True,
        calib_data=toy_data,
        calib_slices=16,
        max_dice_drop=0.0,
        guard_backend="onnxruntime",  # the entry's accuracy is ONNX Runtime's
    )
    try:
        manifest = export_bundle(toy_runs["attention-fusion"], tmp_path / "b", options, _quiet)
    except ExportError as exc:  # the budget could not be met: the table is in the message
        assert "tried" in str(exc)
        assert not (tmp_path / "b").exists()
        return
    details = manifest.precisions["int8"].details
    attempts = details["guard_attempts"]
    assert attempts[-1]["met"] or any(a["met"] for a in attempts)
    assert manifest.precisions["int8"].accuracy["dice_drop_pts"] <= 0.0
    if not attempts[0]["met"]:  # the fallback ran: layers were kept, and the fewest that met it
        kept = details["kept_in_higher_precision"]
        assert kept and len(kept) == min(a["num_excluded"] for a in attempts if a["met"])


def test_bad_inputs_are_one_line_errors_and_leave_nothing(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    run = toy_runs["unet"]
    with pytest.raises(ConfigError, match="--calib-data"):
        ExportOptions(int8=True)
    with pytest.raises(ConfigError, match="no checkpoint"):
        export_bundle(tmp_path / "nope", tmp_path / "b", ExportOptions(), _quiet)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="--force"):
        export_bundle(run, existing, ExportOptions(), _quiet)
    assert (existing / "keep.txt").read_text() == "x"
    # calibration dataset whose classes differ from the model's
    other = tmp_path / "other"
    other.mkdir()
    for item in toy_data.iterdir():
        (other / item.name).symlink_to(item)
    (other / "dataset.json").unlink()
    spec = json.loads((toy_data / "dataset.json").read_text())
    spec["labels"] = {"background": 0, "disc": 1, "ring": 2, "core": 3}
    (other / "dataset.json").write_text(json.dumps(spec))
    options = ExportOptions(int8=True, calib_data=other, data=toy_data)
    with pytest.raises(DatasetError, match="trained on"):
        export_bundle(run, tmp_path / "b2", options, _quiet)
    assert not (tmp_path / "b2").exists()
    with pytest.raises(ConfigError, match="multiple of 16"):
        ExportOptions(height=100, width=64)
    with pytest.raises(ConfigError, match="exclusive"):
        ExportOptions(height=64, width=64, dynamic_hw=True)


def test_tampered_onnx_is_refused_by_the_manifest(
    toy_runs: dict[str, Path], tmp_path: Path
) -> None:
    bundle = tmp_path / "b"
    manifest = export_bundle(toy_runs["unet"], bundle, ExportOptions(), _quiet)
    path = bundle / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ConfigError, match="sha256"):
        manifest.onnx_path(bundle, "fp32")
    with pytest.raises(ConfigError, match="no int8 model"):
        manifest.onnx_path(bundle, "int8")


def test_fewer_calibration_slices_than_asked_warns_and_uses_all(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path: Path
) -> None:
    events: list[Event] = []
    options = ExportOptions(
        int8=True, calib_data=toy_data, calib_slices=500, max_dice_drop=None, max_class_drop=None
    )
    manifest = export_bundle(toy_runs["unet"], tmp_path / "b", options, events.append)
    lines = [e.message for e in events]
    assert any("asked for 500 calibration slices" in line for line in lines), lines
    warned = [e for e in events if e.status == "warning"]
    assert any(e.step == "calibration" for e in warned) and not any("✓" in m for m in lines)
    done = {e.step: e.data for e in events if e.status == "done"}
    assert done["onnx.fp32"]["size_bytes"] == (tmp_path / "b" / "model.onnx").stat().st_size
    assert done["onnx.fp32"]["dice_mean"] == manifest.precisions["fp32"].accuracy["dice_mean"]
    assert done["bundle"]["bundle"] == str(tmp_path / "b")
    assert manifest.calibration is not None
    assert len(manifest.calibration["slice_ids"]) < 500
