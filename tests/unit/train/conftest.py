"""A tiny, learnable nnU-Net dataset for training tests (written with medseg's own writer)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from medseg.data.nifti import save_nifti


def write_toy_dataset(
    root: Path,
    num_cases: int = 4,
    shape: tuple[int, int, int] = (32, 32, 10),
    labels: dict[str, int] | None = None,
    seed: int = 0,
) -> Path:
    """Cases whose label is readable from the intensity: a bright disc (1) and a ring (2)."""
    labels = labels or {"background": 0, "disc": 1, "ring": 2}
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(num_cases):
        label = np.zeros(shape, dtype=np.uint8)
        for z in range(shape[2]):
            cy, cx = rng.integers(10, shape[0] - 10, size=2)
            r = np.hypot(yy - cy, xx - cx)
            if len(labels) > 2:
                label[..., z][(r > 5) & (r <= 8)] = 2
            label[..., z][r <= 5] = 1
        image = (label * 100.0 + 50.0 + rng.normal(0, 10, shape)).astype(np.float32)
        save_nifti(root / "imagesTr" / f"toy_{i:03d}_0000.nii.gz", image, affine)
        save_nifti(root / "labelsTr" / f"toy_{i:03d}.nii.gz", label, affine)
    spec = {
        "channel_names": {"0": "MR"},
        "labels": labels,
        "numTraining": num_cases,
        "file_ending": ".nii.gz",
        "name": "toy",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.fixture
def toy_dataset(tmp_path: Path) -> Path:
    return write_toy_dataset(tmp_path / "toy")


@pytest.fixture
def make_toy_dataset() -> Callable[..., Path]:
    """Factory: ``make_toy_dataset(root, num_cases=4, shape=(32, 32, 10), labels=None)``."""
    return write_toy_dataset


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Training tests run torch on one thread (the suite shares two cores), then restore it."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
