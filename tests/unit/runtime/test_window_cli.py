"""``medseg infer`` and ``medseg bench`` on a sliding-window bundle (real ONNX Runtime):
anisotropic scans in other orientations get masks of their own shape and affine, and the
bench scores them against labels on each case's own grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner
from window_bundle import CLASSES, write_window_bundle

from medseg.bench.results import BenchResults
from medseg.cli.app import app
from medseg.data.nifti import load_nifti, save_nifti
from medseg.transforms.postprocess import ClassRules, Postprocess

pytest.importorskip("onnxruntime")
runner = CliRunner()


def _case(shape: tuple[int, int, int], affine: np.ndarray, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    blob = np.exp(-3 * (grid[0] ** 2 + grid[1] ** 2))
    image = (200 * blob + 100 + rng.normal(0, 5, shape)).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[blob > 0.2] = 1
    label[blob > 0.6] = 2
    return image, label, affine


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cases of different shapes, spacings and orientations (RAS, LPS, LAS)."""
    root = tmp_path_factory.mktemp("wds") / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    specs = [
        ((60, 44, 5), np.diag([0.8, 1.1, 4.0, 1.0])),
        ((41, 70, 4), np.diag([-1.4, -0.7, 3.0, 1.0])),
        ((25, 30, 6), np.diag([-1.6, 1.6, 2.0, 1.0])),  # thinner than one window at 1 mm
    ]
    for i, (shape, affine) in enumerate(specs):
        image, label, aff = _case(shape, affine, i)
        save_nifti(root / "imagesTr" / f"c_{i:03d}_0000.nii.gz", image, aff)
        save_nifti(root / "labelsTr" / f"c_{i:03d}.nii.gz", label, aff)
    spec = {
        "channel_names": {"0": "MR"},
        "labels": CLASSES,
        "numTraining": len(specs),
        "file_ending": ".nii.gz",
        "name": "window-cli",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rules = Postprocess({"high": ClassRules(largest_component=True)})
    return write_window_bundle(tmp_path_factory.mktemp("wcb") / "bundle", postprocess=rules)


@pytest.mark.parametrize("case", ["c_000", "c_001", "c_002"])
def test_infer_mask_has_the_scans_shape_and_affine(
    bundle: Path, dataset: Path, tmp_path: Path, case: str
) -> None:
    image = dataset / "imagesTr" / f"{case}_0000.nii.gz"
    out = tmp_path / "mask.nii.gz"
    args = ["infer", bundle, image, "--out", out, "--backend", "onnxruntime", "--threads", "1"]
    result = runner.invoke(app, [*map(str, args), "--tta", "--probabilities"])
    assert result.exit_code == 0, result.output
    assert (
        "(mirroring TTA)" in result.output and "post-processing of high: applied" in result.output
    )
    scan, mask = load_nifti(image), load_nifti(out)
    assert mask.shape == scan.shape
    np.testing.assert_allclose(mask.affine, scan.affine)
    ref = np.asarray(load_nifti(dataset / "labelsTr" / f"{case}.nii.gz").data)
    assert np.mean(np.asarray(mask.data) == ref) > 0.6  # the conv thresholds the blob


def test_infer_refuses_tta_on_a_pad_bundle(
    tiny_bundle: Path, dataset: Path, tmp_path: Path
) -> None:
    image = dataset / "imagesTr" / "c_000_0000.nii.gz"
    args = ["infer", tiny_bundle, image, "--out", tmp_path / "m.nii.gz", "--tta"]
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 2
    assert "--tta needs a bundle with a sliding-window recipe" in result.output
    assert not (tmp_path / "m.nii.gz").exists()


def test_bench_scores_on_each_cases_grid_with_a_prepost_column(
    bundle: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = [
        "bench",
        bundle,
        "--data",
        dataset,
        "--split",
        "all",
        "--backends",
        "onnxruntime",
        "--precisions",
        "fp32",
        "--batch",
        "1,8",
        "--warmup",
        "0",
        "--iters",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--report",
        out,
        "--no-postprocess",
    ]
    result = runner.invoke(app, list(map(str, args)))
    assert result.exit_code == 0, result.output
    results = BenchResults.load(out / "results.json")
    row = results.row("onnxruntime", "fp32", 8)
    assert row is not None and row.accuracy is not None and row.prepost_pct is not None
    assert row.prepost_pct > 0 and results.settings["postprocess"] is False
    assert "pre/post %" in (out / "report.md").read_text()
    # the same Dice as scoring the runtime's masks against the label files directly
    from medseg.runtime import Segmenter, load_scan

    tp = fp = fn = 0
    with Segmenter.from_bundle(bundle, "onnxruntime", threads=1, postprocess=False) as seg:
        for i in range(3):
            scan = load_scan([dataset / "imagesTr" / f"c_{i:03d}_0000.nii.gz"])
            pred = seg.segment(scan.image, affine=scan.affine, spacing=scan.spacing).labels
            ref = np.asarray(load_nifti(dataset / "labelsTr" / f"c_{i:03d}.nii.gz").data)
            p, r = pred == 2, ref == 2
            tp, fp, fn = tp + int((p & r).sum()), fp + int((p & ~r).sum()), fn + int((~p & r).sum())
    assert row.accuracy.dice_per_class["high"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
