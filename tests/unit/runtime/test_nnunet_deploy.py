"""An nnU-Net fold-ensemble bundle through the second half of the pipeline.

``medseg bench`` (accuracy on each case's own grid, FP32 and FP16, cost per fold), ``medseg
build --runtime tensorrt-rtx`` (one real engine per fold and precision, built here on the CPU)
and the refusals between bundle kinds. The bundle's folds are small real ONNX networks
(``nnunet_bundle.py``); the cases come from the MNI152 cohort, whose labels the recipe uses.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from nnunet_bundle import plans_recipe, write_nnunet_bundle
from typer.testing import CliRunner

from medseg.bench.runner import BenchOptions, run_bench
from medseg.bundle import Manifest
from medseg.bundle.folds import fold_bundles, fold_manifest
from medseg.cli.app import app
from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.errors import ConfigError, MedsegError
from medseg.metrics import DiceAccumulator
from medseg.runtime import Segmenter, load_scan

pytest.importorskip("onnxruntime")
runner = CliRunner()
COHORT_LABELS = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nnunet_deploy") / "cohort"
    write_mni152_cohort(out, cases=2, seed=7, inplane_mm=(3.0, 4.0), thickness_mm=(4.0, 6.0))
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two folds, FP32 and FP16, 3d_fullres, the cohort's four classes (read-only use).

    Without mirror axes (a trainer without mirroring): 8x fewer windows, a fast CI test; the
    mirroring path is tested against nnU-Net in test_nnunet_segmenter.py.
    """
    root = tmp_path_factory.mktemp("nnunet_deploy") / "bundle"
    recipe = dataclasses.replace(plans_recipe("3d_fullres", COHORT_LABELS), mirror_axes=())
    return write_nnunet_bundle(root, recipe, fp16=True)


@pytest.mark.slow
def test_bench_scores_each_case_on_its_own_grid_per_precision_with_the_cost_per_fold(
    bundle: Path, cohort: Path, tmp_path: Path
) -> None:
    options = BenchOptions(
        backends=("onnxruntime",),
        precisions=("fp32", "fp16"),
        batches=(1, 2),
        warmup=1,
        iters=2,
        repeats=1,
        split="all",
        threads=1,
        max_cases=1,
        overlays=False,
    )
    results = run_bench(bundle, cohort, options)
    rows = {row.key: row for row in results.rows}
    assert set(rows) == {("onnxruntime", p, b) for p in ("fp32", "fp16") for b in (1, 2)}
    assert all(row.ok for row in rows.values()), [r.reason for r in rows.values()]
    fp32, fp16 = rows[("onnxruntime", "fp32", 2)], rows[("onnxruntime", "fp16", 2)]
    assert fp32.fold_s is not None and list(fp32.fold_s) == ["0", "1"]
    assert all(s > 0 for s in fp32.fold_s.values()) and fp32.volume_s is not None
    assert rows[("onnxruntime", "fp32", 1)].fold_s is None  # measured at the accuracy batch
    assert fp32.latency is not None and fp32.latency.p50_ms > 0  # ms per window batch
    # the accuracy is that of medseg infer's labels on the case's own grid (pooled Dice)
    case = results.dataset["cases"][0]
    scan = load_scan(sorted((cohort / "imagesTr").glob(f"{case}_*.nii.gz")))
    with Segmenter.from_bundle(bundle, "onnxruntime", threads=1) as segmenter:
        labels = segmenter.segment(scan.image, affine=scan.affine, spacing=scan.spacing).labels
    ref = np.asarray(load_scan([cohort / "labelsTr" / f"{case}.nii.gz"]).image[0]).astype(int)
    dice = DiceAccumulator({n: v for n, v in COHORT_LABELS.items() if v}, empty="nan")
    dice.update(labels, ref)
    assert fp32.accuracy is not None
    assert fp32.accuracy.dice_mean == pytest.approx(dice.mean(), abs=1e-12)
    assert fp16.accuracy is not None and fp16.accuracy.dice_drop_pts is not None
    assert fp16.accuracy.argmax_agreement is not None and fp16.accuracy.argmax_agreement > 0.99


def test_bench_and_infer_refuse_options_of_another_bundle_kind(
    bundle: Path, cohort: Path, tmp_path: Path
) -> None:
    base = ["bench", str(bundle), "--data", str(cohort), "--precisions", "fp32", "--batch", "2"]
    for extra, message in (
        ([], "this nnU-Net bundle records no validation cases"),  # --split val, the default
        (["--split", "all", "--batch", "8"], "--batch 8 is outside the bundle's batch range"),
    ):
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    out = tmp_path / "repo"
    result = runner.invoke(
        app, ["export-triton", str(bundle), "--out", str(out), "--max-batch", "2"]
    )
    assert result.exit_code == 2 and "--max-batch sets the raw-logits models" in result.output
    assert not out.exists()
    demo = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"
    manifest = Manifest.load(demo)
    with pytest.raises(ConfigError, match="needs an nnU-Net bundle"):
        manifest.nnunet_recipe("--accumulate")
    with pytest.raises(ConfigError, match="runs medseg recipes only"):
        Manifest.load(bundle).medseg_recipe("the Triton client")


def test_a_fold_is_a_one_model_bundle_of_its_own_files(bundle: Path) -> None:
    manifest = Manifest.load(bundle)
    parts = fold_bundles(manifest, bundle)
    assert list(parts) == ["0", "1"]
    folder, part = parts["1"]
    assert folder == bundle / "fold_1" and part.folds is None
    assert part.onnx_path(folder, "fp16") == bundle / "fold_1" / "model.fp16.onnx"
    raw = json.loads((bundle / "medseg.json").read_text())
    assert part.precisions["fp32"].sha256 == raw["precisions"]["fp32"]["folds"]["1"]["sha256"]
    with pytest.raises(ConfigError, match=r"fold '7' is not in this bundle"):
        fold_manifest(manifest, "7")


@pytest.mark.slow
def test_tensorrt_rtx_builds_one_engine_per_fold_and_precision(
    bundle: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (medseg-edge[rtx])")
    import shutil

    from medseg.runtime.engines import check_plan_files

    work = tmp_path / "bundle"
    shutil.copytree(bundle, work)
    result = runner.invoke(app, ["build", str(work), "--runtime", "tensorrt-rtx"])
    assert result.exit_code == 0, result.output
    plans = sorted(work.glob("fold_*/engines/rtx-*/*.plan"))
    assert [p.relative_to(work).parts[0] + "/" + p.name for p in plans] == [
        "fold_0/fp16.plan",
        "fold_0/fp32.plan",
        "fold_1/fp16.plan",
        "fold_1/fp32.plan",
    ]
    assert "✓ fold 1 fp16: " in result.output and "┃ fold ┃" in result.output
    manifest = Manifest.load(work)
    for plan in plans:
        fold = plan.parts[-4].removeprefix("fold_")
        sidecar = check_plan_files(
            plan, work / f"fold_{fold}", fold_manifest(manifest, fold), plan.stem
        )
        assert sidecar.profile["depth"] == {"min": 24, "opt": 24, "max": 24}
        assert sidecar.runtime == "tensorrt-rtx" and sidecar.source_onnx.startswith("model")
    # no RTX GPU here: auto keeps ONNX Runtime for every fold; asking for the engines fails
    # in one line naming the fold (a GPU run is in tests/gpu/test_nnunet_rtx_ensemble.py)
    with Segmenter.from_bundle(work, threads=1) as segmenter:
        assert {b.name for b in segmenter.runners()} == {"onnxruntime"}
    from medseg.runtime.cuda import gpu_available

    if not gpu_available():
        with pytest.raises(MedsegError, match="GPU"):
            Segmenter.from_bundle(work, "tensorrt-rtx")
    (work / "fold_1" / "engines").rename(work / "elsewhere")  # fold 1 has no engine now
    if gpu_available():
        with pytest.raises(MedsegError, match="fold 1: bundle"):
            Segmenter.from_bundle(work, "tensorrt-rtx")


@pytest.mark.slow
def test_triton_serves_the_fold_ensemble_through_the_segmenter(
    bundle: Path, cohort: Path, tmp_path: Path
) -> None:
    """The real tritonserver of the pytriton wheel, as tests/unit/deploy/test_triton_server.py."""
    import socket

    pytest.importorskip("tritonclient.http")
    from medseg.deploy import export_triton
    from medseg.deploy.remote import RemoteSegmenter
    from medseg.deploy.server import ServerOptions, TritonServer, find_tritonserver
    from medseg.errors import MissingDependencyError

    with pytest.raises(ConfigError, match="--max-batch sets the raw-logits models"):
        export_triton(bundle, tmp_path / "no", max_batch=2)
    with pytest.raises(ConfigError, match="serves it through the end-to-end segmenter only"):
        export_triton(bundle, tmp_path / "no", segment=False)
    assert not (tmp_path / "no").exists()
    models = export_triton(bundle, tmp_path / "repo", segment_precision="fp16")
    assert [m.platform for m in models] == ["python"]  # the segmenter only
    copy = models[0].path / "1" / "bundle"
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.onnx")) == [
        "fold_0/model.fp16.onnx",
        "fold_0/model.onnx",
        "fold_1/model.fp16.onnx",
        "fold_1/model.onnx",
    ]
    assert "nnU-Net fold ensemble" in (tmp_path / "repo" / "README.md").read_text()
    try:
        install = find_tritonserver()
    except MissingDependencyError as exc:
        pytest.skip(f"no tritonserver here ({exc})")

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    scan = load_scan(sorted((cohort / "imagesTr").glob("*_0000.nii.gz"))[:1])
    with Segmenter.from_bundle(bundle, "onnxruntime", "fp16") as local:
        expected = local.segment(scan.image, affine=scan.affine).labels
    options = ServerOptions(http_port=port(), grpc_port=port())
    with TritonServer(tmp_path / "repo", [models[0].name], options, install) as server:
        server.wait_ready(180)
        with RemoteSegmenter(server.http_url, models[0].name) as remote:
            labels = remote.segment(scan.image.astype(np.float32), scan.affine)
            with pytest.raises(MedsegError, match="spacing"):  # no affine: no spacing
                remote.segment(scan.image.astype(np.float32), None)
    np.testing.assert_array_equal(labels, expected)
