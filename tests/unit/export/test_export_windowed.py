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
    options = ExportOptions(
        fp16=True, int8=True, calib_data=toy_data, calib_slices=8, batch=(1, 4, 8)
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
