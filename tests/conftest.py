"""Fixtures shared across the suite: the embedded MNI152 dataset, a learnable toy dataset,
briefly trained toy runs, a tiny exported bundle, and the committed demo bundle."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
#: The committed demo bundle (medseg export of models/mni152-tissue, FP32/FP16/INT8).
DEMO_BUNDLE = REPO / "models" / "mni152-tissue" / "bundle"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/nnunet_real.py


def pytest_sessionstart(session: pytest.Session) -> None:
    """With pytest-xdist workers (``make test``), fill the committed demo bundle's OpenVINO
    model cache once in the controller, before any worker runs: workers then only read it,
    and no two of them write the same cache folder at once."""
    import contextlib
    import os

    if os.environ.get("PYTEST_XDIST_WORKER") or not getattr(
        session.config.option, "numprocesses", None
    ):
        return
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    from medseg.bundle import Manifest
    from medseg.errors import MedsegError
    from medseg.runtime.backends import create_backend

    manifest = Manifest.load(DEMO_BUNDLE)
    for precision in (*manifest.precisions, "bf16"):
        # MedsegError: e.g. bf16 on a CPU without native BF16, nothing to cache
        with contextlib.suppress(MedsegError):
            create_backend(DEMO_BUNDLE, manifest, "openvino", precision).load().close()


@pytest.fixture(autouse=True)
def _training_data_in_the_test_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training called in-process by a test prepares its batches in the test process.

    The default (one ``DataLoader`` worker per spare core) forks the pytest-xdist worker, which
    holds OpenVINO/ONNX Runtime thread pools, server subprocesses and execnet pipes; two xdist
    workers each forking a data worker also put four busy processes on CI's 2 cores. Tests that
    are about data workers pass ``workers`` explicitly; training in a subprocess (the CLI tests,
    torchrun) keeps the default.
    """
    monkeypatch.setattr("medseg.train.steps.default_workers", lambda *args, **kwargs: 0)


@pytest.fixture(scope="session")
def mni_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded MNI152 tissue dataset, written once per test session (read-only use)."""
    from medseg.data.mni152 import write_mni152

    return write_mni152(tmp_path_factory.mktemp("mni") / "mni152")


def write_toy_dataset(root: Path) -> Path:
    """Four 32x48x12 toy cases (a disc inside a ring per slice, noisy), nnU-Net layout."""
    from medseg.data.nifti import save_nifti

    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    shape = (32, 48, 12)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(4):
        label = np.zeros(shape, dtype=np.uint8)
        for z in range(shape[2]):
            cy, cx = rng.integers(10, 22), rng.integers(10, 38)
            r = np.hypot(yy - cy, xx - cx)
            label[..., z][(r > 5) & (r <= 8)] = 2
            label[..., z][r <= 5] = 1
        image = (label * 100.0 + 50.0 + rng.normal(0, 10, shape)).astype(np.float32)
        save_nifti(root / "imagesTr" / f"toy_{i:03d}_0000.nii.gz", image, np.eye(4))
        save_nifti(root / "labelsTr" / f"toy_{i:03d}.nii.gz", label, np.eye(4))
    spec = {
        "channel_names": {"0": "MR"},
        "labels": {"background": 0, "disc": 1, "ring": 2},
        "numTraining": 4,
        "file_ending": ".nii.gz",
        "name": "toy",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="session")
def toy_runs(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One briefly trained run directory per registered architecture (tiny variants).

    Whole-slice geometry (pad recipe, 32x48 network input): the runtime's pad path and every
    test built on :func:`tiny_bundle` rely on it; planned (window) runs and bundles have
    their own fixtures (tests/unit/export/test_export_windowed.py, tests/unit/runtime/).
    """
    torch = pytest.importorskip("torch")
    from medseg.models import list_models
    from medseg.train import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {}
    try:
        for arch in list_models():
            run = tmp_path_factory.mktemp("runs") / arch
            config = TrainConfig(
                arch=arch,
                variant="tiny",
                geometry="whole-slice",  # the pad-recipe bundle these fixtures describe
                epochs=2,
                batch_size=4,
                lr=5e-3,
            )
            train(toy_data, run, config)
            runs[arch] = run
    finally:
        torch.set_num_threads(threads)
    return runs


@pytest.fixture(scope="session")
def tiny_bundle(
    toy_runs: dict[str, Path], toy_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The toy attention-fusion run exported to FP32/FP16/INT8 (input 32x48, batch 1:4:8).

    Session-scoped and shared: tests that modify a bundle copy it first.
    """
    pytest.importorskip("modelopt")
    from medseg.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    # the guard off (a 2-epoch toy model): its search is tested in tests/unit/export
    options = ExportOptions(
        fp16=True,
        int8=True,
        calib_data=toy_data,
        calib_slices=16,
        batch=(1, 4, 8),
        max_dice_drop=None,
        max_class_drop=None,
    )
    export_bundle(toy_runs["attention-fusion"], out, options, lambda _: None)
    return out


@pytest.fixture(scope="session")
def demo_bundle() -> Path:
    """The committed demo bundle (read-only use)."""
    if not (DEMO_BUNDLE / "medseg.json").is_file():
        pytest.fail(f"the committed demo bundle {DEMO_BUNDLE} is missing")
    return DEMO_BUNDLE


@pytest.fixture(scope="session")
def nnunet_real(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real nnU-Net result folders written by nnUNetv2_plan_and_preprocess and nnUNetv2_train
    (tests/nnunet_real.py: 2d and 3d_fullres, folds 0 and 1, trainer nnUNetTrainer_medsegCI,
    plans nnUNetPlansMedsegCI) and nnUNetPredictor's predictions on two unseen cases.

    Built once per test session: under pytest-xdist the workers share the session's base
    temporary folder, and a file lock lets the first worker build while the other waits.
    ``MEDSEG_NNUNET_REAL=DIR`` reuses (or makes, once) a build in DIR across sessions.
    """
    pytest.importorskip("nnunetv2", reason="needs the nnunet extra")
    from filelock import FileLock

    import nnunet_real as builder

    if os.environ.get("MEDSEG_NNUNET_REAL"):
        keep = Path(os.environ["MEDSEG_NNUNET_REAL"])
        keep.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(keep) + ".lock"):
            if not (keep / "build.json").is_file():
                builder.build(keep)
        return keep
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    root = shared / "nnunet-real"
    with FileLock(str(shared / "nnunet-real.lock")):
        if not (root / "build.json").is_file():
            import shutil

            shutil.rmtree(root, ignore_errors=True)  # a build that died half-way
            builder.build(root)
    return root
