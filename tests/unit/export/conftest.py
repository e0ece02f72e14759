"""Trained toy checkpoints (1 epoch on a learnable toy dataset) for export tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _write_toy(root: Path) -> Path:
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
    return _write_toy(tmp_path_factory.mktemp("toy") / "toy")


@pytest.fixture(scope="session")
def toy_runs(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One briefly trained run directory per registered architecture (tiny variants)."""
    from medseg.models import list_models
    from medseg.train import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    runs = {}
    try:
        for arch in list_models():
            run = tmp_path_factory.mktemp("runs") / arch
            config = TrainConfig(arch=arch, variant="tiny", epochs=2, batch_size=4, lr=5e-3)
            train(toy_data, run, config)
            runs[arch] = run
    finally:
        torch.set_num_threads(threads)
    return runs
