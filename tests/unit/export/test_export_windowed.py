"""Export of a planned (sliding-window) run: static patch input with a dynamic batch, Dice of
every precision through the runtime's sliding window on each validation case's own grid,
post-processing decided on validation, plan in the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.bundle import Manifest
from medseg.data.nifti import load_nifti
from medseg.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("monai")
pytest.importorskip("modelopt")
onnx = pytest.importorskip("onnx")

FAST = {"arch": "unet", "variant": "tiny", "lr": 5e-3, "epochs": 1, "steps_per_epoch": 4}


@pytest.fixture(scope="module")
def planned_run(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medseg.train import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("planned") / "run"
        train(toy_data, run, TrainConfig(fold=0, folds=4, **FAST))
    finally:
        torch.set_num_threads(threads)
    return run


@pytest.fixture(scope="module")
def window_bundle(
    planned_run: Path, toy_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    from medseg.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("wexport") / "bundle"
    lines: list[str] = []
    options = ExportOptions(  # the guard measures on OpenVINO, without a budget (recorded)
        fp16=True,
        int8=True,
        calib_data=toy_data,
        calib_slices=8,
        batch=(1, 4, 8),
        guard_backend="openvino",
        max_dice_drop=None,
        max_class_drop=None,
    )
    export_bundle(planned_run, out, options, lambda event: lines.append(event.message))
    return out, lines


def test_manifest_records_window_recipe_plan_split_and_postprocess(
    window_bundle: tuple[Path, list[str]], planned_run: Path
) -> None:
    from medseg.train import load_checkpoint

    bundle, lines = window_bundle
    meta = load_checkpoint(planned_run).meta
    manifest = Manifest.load(bundle)
    assert manifest.schema_version == 2 and manifest.preprocessing.size_policy == "window"
    ph, pw = manifest.preprocessing.patch_size or (0, 0)
    assert (manifest.input.height.min, manifest.input.height.max) == (ph, ph)
    assert (manifest.input.width.min, manifest.input.width.max) == (pw, pw)
    assert str(manifest.input.batch) == "1:4:8"
    assert manifest.plan == meta["plan"]
    assert manifest.source["validation"]["case_ids"] == meta["split"]["val"]
    assert manifest.postprocess is not None
    effect = manifest.postprocess.validation["classes"]
    assert set(effect) == {"disc", "ring"} and set(manifest.postprocess.classes) == set(effect)
    for name, e in effect.items():
        assert e["dice_after"] >= e["dice_before"] - 1e-9, name
    assert any("post-processing disc" in line for line in lines)
    assert set(manifest.precisions) == {"fp32", "fp16", "int8"}


def test_onnx_input_is_static_hw_with_a_dynamic_batch(
    window_bundle: tuple[Path, list[str]],
) -> None:
    bundle, _ = window_bundle
    manifest = Manifest.load(bundle)
    for precision in ("fp32", "int8"):
        model = onnx.load(str(bundle / manifest.precisions[precision].file))
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param and not dims[0].dim_value  # batch: symbolic
        assert [d.dim_value for d in dims[2:]] == list(manifest.preprocessing.patch_size or ())


def test_recorded_dice_is_the_runtimes_on_each_cases_own_grid(
    window_bundle: tuple[Path, list[str]], toy_data: Path
) -> None:
    from medseg.runtime import Segmenter, load_scan

    bundle, _ = window_bundle
    manifest = Manifest.load(bundle)
    counts = {n: [0, 0] for n in ("disc", "ring")}
    with Segmenter.from_bundle(bundle, "onnxruntime", threads=1, postprocess=False) as seg:
        for case in manifest.source["validation"]["case_ids"]:
            scan = load_scan([toy_data / "imagesTr" / f"{case}_0000.nii.gz"])
            pred = seg.segment(scan.image, affine=scan.affine, spacing=scan.spacing).labels
            ref = np.asarray(load_nifti(toy_data / "labelsTr" / f"{case}.nii.gz").data)
            assert pred.shape == ref.shape
            for name, value in manifest.classes.items():
                if name in counts:
                    p, r = pred == value, ref == value
                    counts[name][0] += 2 * int((p & r).sum())
                    counts[name][1] += int(p.sum() + r.sum())
    recorded = manifest.precisions["fp32"].accuracy["dice_per_class"]
    for name, (num, den) in counts.items():
        assert recorded[name] == pytest.approx(num / den, abs=1e-9)


def test_patch_size_conflicts_are_refused(
    planned_run: Path, toy_data: Path, tmp_path: Path
) -> None:
    from medseg.export import ExportOptions, export_bundle

    for options, match in (
        (ExportOptions(dynamic_hw=True), "--dynamic-hw does not apply"),
        (ExportOptions(height=64, width=64), "differ from the run's patch"),
    ):
        with pytest.raises(ConfigError, match=match):
            export_bundle(planned_run, tmp_path / "b", options, lambda _: None)
        assert not (tmp_path / "b").exists()


def test_int8_labels_do_not_depend_on_the_window_batch(
    window_bundle: tuple[Path, list[str]], toy_data: Path
) -> None:
    from medseg.runtime import Segmenter, load_scan

    bundle, _ = window_bundle
    scan = load_scan([toy_data / "imagesTr" / "toy_002_0000.nii.gz"])
    results = []
    for batch in (1, 3, 8):
        with Segmenter.from_bundle(bundle, "onnxruntime", "int8", batch_size=batch, threads=1) as s:
            results.append(s.segment(scan.image, affine=scan.affine, probabilities=True))
    assert results[0].labels.shape == scan.image.shape[1:]
    for other in results[1:]:
        np.testing.assert_array_equal(other.labels, results[0].labels)


def test_window_export_records_accuracy_per_backend(
    window_bundle: tuple[Path, list[str]],
) -> None:
    """Every precision on every installed CPU backend, each against its own FP32, through
    the same sliding window as the precision entries."""
    pytest.importorskip("openvino")
    from medseg.runtime.cpu import cpu_features

    bundle, lines = window_bundle
    manifest = Manifest.load(bundle)
    by_backend = manifest.backend_accuracy
    assert set(by_backend) == {"onnxruntime", "openvino"}
    assert set(by_backend["onnxruntime"]) == {"fp32", "fp16", "int8"}
    bf16 = {"bf16"} if cpu_features().bf16 else set()
    assert set(by_backend["openvino"]) == {"fp32", "fp16", "int8"} | bf16
    for backend, by_precision in by_backend.items():
        assert by_precision["fp32"]["dice_drop_pts"] == 0.0
        for precision, record in by_precision.items():
            assert record["reference"] == f"{backend} fp32"
            assert set(record["dice_per_class"]) == {"disc", "ring"}, (backend, precision)
            assert 0.0 < record["argmax_agreement"] <= 1.0, (backend, precision)
    # ONNX Runtime's FP32 and FP16 rows are the precision entries' own (sliding-window) Dice
    for precision in ("fp32", "fp16"):
        recorded = manifest.precisions[precision].accuracy["dice_mean"]
        assert by_backend["onnxruntime"][precision]["dice_mean"] == recorded
    # OpenVINO's FP32 is measured, not copied: same labels up to float noise
    ov, ort = by_backend["openvino"]["fp32"], by_backend["onnxruntime"]["fp32"]
    assert ov["dice_mean"] == pytest.approx(ort["dice_mean"], abs=5e-3)
    details = manifest.precisions["int8"].details
    assert details["guard_backend"] == "openvino"  # asked for (the default: onnxruntime)
    assert by_backend["onnxruntime"]["int8"]["file"] == "model.int8.cpu.onnx"
    ov8 = by_backend["openvino"]["int8"]  # both INT8 files measured there, the better one runs
    assert set(ov8["files_compared"]) == {"model.int8.onnx", "model.int8.cpu.onnx"}
    assert ov8["dice_drop_pts"] == min(ov8["files_compared"].values())
    assert ov8["files_compared"]["model.int8.onnx"] == details["guard_attempts"][0]["dice_drop_pts"]
    assert any("accuracy per CPU backend" in line for line in lines)


def test_window_int8_guard_forced_on_openvino(
    window_bundle: tuple[Path, list[str]],
    planned_run: Path,
    toy_data: Path,
    tmp_path: Path,
) -> None:
    """A budget under the fully quantised model's drop on OpenVINO: the guard must rank the
    layers on OpenVINO and keep some in FP32 until OpenVINO's sliding-window Dice meets it."""
    pytest.importorskip("openvino")
    from medseg.export import ExportOptions, export_bundle

    first = Manifest.load(window_bundle[0]).precisions["int8"].details["guard_attempts"][0]
    assert first["num_excluded"] == 0
    full_drop = first["dice_drop_pts"]  # fully quantised, measured on OpenVINO (no budget)
    if full_drop <= 0.0:
        pytest.skip(f"fully quantised INT8 loses nothing on OpenVINO here ({full_drop:+.3f} pts)")
    budget = full_drop / 2
    lines: list[str] = []
    options = ExportOptions(
        int8=True,
        calib_data=toy_data,
        calib_slices=8,
        batch=(1, 4, 8),
        max_dice_drop=budget,
        guard_backend="openvino",
    )
    manifest = export_bundle(
        planned_run, tmp_path / "b", options, lambda event: lines.append(event.message)
    )
    details = manifest.precisions["int8"].details
    assert details["guard_backend"] == "openvino"
    attempts = details["guard_attempts"]
    assert attempts[0]["num_excluded"] == 0 and not attempts[0]["met"]
    assert attempts[0]["dice_drop_pts"] == pytest.approx(full_drop, abs=1e-9)  # deterministic
    kept = details["kept_in_higher_precision"]
    assert kept, "the guard kept no layer in FP32 although full INT8 missed the budget"
    chosen = next(a for a in attempts if a["num_excluded"] == len(kept))
    assert chosen["met"] and chosen["dice_drop_pts"] <= budget
    assert set(chosen["excluded"]) == set(kept)
    assert any("measured on openvino" in line for line in lines)
    assert all("on openvino" in line for line in lines if "kept in FP32: Dice drop" in line)
    # OpenVINO runs the guarded file or the CPU file, whichever loses less on it
    ov_int8 = manifest.backend_accuracy["openvino"]["int8"]
    measured = ov_int8.get("files_compared", {"model.int8.onnx": ov_int8["dice_drop_pts"]})
    assert measured["model.int8.onnx"] == pytest.approx(chosen["dice_drop_pts"])
    assert ov_int8["dice_drop_pts"] == min(measured.values()) <= budget
