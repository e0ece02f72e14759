"""Bundles exported from result folders nnU-Net wrote, through ``medseg bench`` and ``build``.

The folders: tests/nnunet_real.py (``nnUNetv2_train`` output, 3d_fullres, folds 0 and 1); the
bundle: the ``bundles`` fixture of conftest.py (FP32, FP16 and INT8 per fold, read-only here).
The hand-made fold bundle of tests/unit/runtime/test_nnunet_deploy.py covers the same commands
with more options; these tests check that what nnU-Net itself wrote goes through them (issue 21).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medseg.bundle import Manifest
from medseg.bundle.folds import fold_manifest
from medseg.cli.app import app

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow
runner = CliRunner()
FOLDS = ["0", "1"]


def test_bench_real_nnunet_bundle_per_precision_with_the_cost_per_fold(
    bundles: dict[str, Path], cohort_raw: Path, tmp_path: Path
) -> None:
    from medseg.metrics import DiceAccumulator
    from medseg.runtime import Segmenter, load_scan

    bundle = bundles["3d_fullres"]
    manifest = Manifest.load(bundle)
    precisions = sorted(manifest.precisions)
    assert precisions == ["fp16", "fp32", "int8"] and list(manifest.folds or ()) == FOLDS
    report = tmp_path / "report"
    args = ["bench", str(bundle), "--data", str(cohort_raw), "--split", "all",
            "--backends", "onnxruntime", "--precisions", ",".join(precisions), "--batch", "1",
            "--warmup", "0", "--iters", "1", "--repeats", "1", "--threads", "1",
            "--max-cases", "1", "--report", str(report)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads((report / "results.json").read_text())
    rows = {row["precision"]: row for row in data["rows"]}
    assert sorted(rows) == precisions
    assert {(r["backend"], r["batch"], r["status"]) for r in rows.values()} == {
        ("onnxruntime", 1, "ok")
    }, [r["reason"] for r in rows.values()]
    for precision, row in rows.items():
        assert list(row["fold_s"]) == FOLDS, precision  # the cost of each fold, seconds/case
        assert all(s > 0 for s in row["fold_s"].values()) and row["volume_s"] > 0
        assert row["volume_s"] >= max(row["fold_s"].values())
        accuracy = row["accuracy"]
        assert 0.0 <= accuracy["dice_mean"] <= 1.0 and not math.isnan(accuracy["dice_mean"])
        assert set(accuracy["dice_per_class"]) == {"CSF", "GM", "WM"}
        if precision != "fp32":
            assert accuracy["dice_drop_pts"] is not None
            assert accuracy["argmax_agreement"] > 0.9, precision
    fp32 = rows["fp32"]["accuracy"]
    # one short epoch (Dice ~0.2 here); labelling everything background would score 0
    assert fp32["dice_mean"] > 0.05, fp32
    # the accuracy is that of medseg infer's labels on the case's own grid (pooled Dice)
    (case,) = data["dataset"]["cases"]
    scan = load_scan(sorted((cohort_raw / "imagesTr").glob(f"{case}_*.nii.gz")))
    with Segmenter.from_bundle(bundle, "onnxruntime", threads=1) as segmenter:
        labels = segmenter.segment(scan.image, affine=scan.affine, spacing=scan.spacing).labels
    ref = np.asarray(load_scan([cohort_raw / "labelsTr" / f"{case}.nii.gz"]).image[0])
    names = json.loads((cohort_raw / "dataset.json").read_text())["labels"]
    dice = DiceAccumulator({n: int(v) for n, v in names.items() if int(v)}, empty="nan")
    dice.update(labels, ref.astype(int))
    assert fp32["dice_mean"] == pytest.approx(dice.mean(), abs=1e-12)
    for name in ("report.md", "junit.xml"):
        assert (report / name).is_file(), name


def test_tensorrt_rtx_builds_real_nnunet_folds_per_precision(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")
    from medseg.runtime.engines import check_plan_files

    bundle = bundles["3d_fullres"]
    work = tmp_path / "bundle"
    shutil.copytree(bundle, work)  # the fixture's bundle stays as exported
    result = runner.invoke(
        app, ["build", str(work), "--runtime", "tensorrt-rtx", "--precision", "all"]
    )
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(work)
    precisions = sorted(manifest.precisions)
    plans = sorted(work.glob("fold_*/engines/rtx-*/*.plan"))
    assert [p.relative_to(work).parts[0] + "/" + p.stem for p in plans] == [
        f"fold_{f}/{p}" for f in FOLDS for p in precisions
    ]
    patch = manifest.nnunet_recipe("the test").patch_size
    for plan in plans:
        fold = plan.parts[-4].removeprefix("fold_")
        assert plan.stat().st_size > 0
        sidecar = check_plan_files(
            plan, work / f"fold_{fold}", fold_manifest(manifest, fold), plan.stem
        )
        assert sidecar.runtime == "tensorrt-rtx" and sidecar.source_onnx.startswith("model")
        assert sidecar.profile["depth"]["opt"] == patch[0], sidecar.profile
        assert f"✓ fold {fold} {plan.stem}: " in result.output
    assert not list(bundle.glob("**/engines"))  # nothing written into the fixture's bundle
