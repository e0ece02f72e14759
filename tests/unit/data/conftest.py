"""Small synthetic nnU-Net v2 raw datasets written with nibabel, and helpers to break them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SHAPE = (16, 20, 12)
SPACING = (1.0, 1.0, 2.5)
CHANNELS = ("T1", "T2")
LABELS = {"background": 0, "CSF": 1, "GM": 2}
AFFINE = np.array(
    [
        [SPACING[0], 0.0, 0.0, -8.0],
        [0.0, SPACING[1], 0.0, -10.0],
        [0.0, 0.0, SPACING[2], -15.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write ``array`` as NIfTI with nibabel directly (independent of medseg's writer)."""
    nib = pytest.importorskip("nibabel")  # here, not at import: numpy-only tests share this file
    img = nib.Nifti1Image(array, affine, dtype=array.dtype)
    zooms = [float(v) for v in np.linalg.norm(affine[:3, :3], axis=0)]
    img.header.set_zooms(tuple(zooms + [1.0] * (array.ndim - 3)))
    nib.save(img, str(path))
    return path


def make_label(rng: np.random.Generator, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """A label map with background, a CSF box and a GM ball, all three classes present."""
    label = np.zeros(shape, dtype=np.uint8)
    x, y, z = (rng.integers(2, 4) for _ in range(3))
    label[x : x + 6, y : y + 8, z : z + 4] = 1
    grid = np.indices(shape)
    centre = np.array(shape) // 2 + rng.integers(-1, 2, size=3)
    ball = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 9
    label[ball] = 2
    return label


@dataclass
class SyntheticDataset:
    """A dataset written in ``root``; ``images[case]`` is ``(C, X, Y, Z)`` float32."""

    root: Path
    ending: str
    shape: tuple[int, int, int] = SHAPE
    spacing: tuple[float, float, float] = SPACING
    affine: np.ndarray = field(default_factory=AFFINE.copy)
    channels: tuple[str, ...] = CHANNELS
    label_values: dict[str, int] = field(default_factory=LABELS.copy)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    train_ids: list[str] = field(default_factory=list)
    test_ids: list[str] = field(default_factory=list)

    def image_path(self, case: str, channel: int = 0, subset: str = "train") -> Path:
        folder = "imagesTr" if subset == "train" else "imagesTs"
        return self.root / folder / f"{case}_{channel:04d}{self.ending}"

    def label_path(self, case: str, subset: str = "train") -> Path:
        folder = "labelsTr" if subset == "train" else "labelsTs"
        return self.root / folder / f"{case}{self.ending}"

    def dataset_json(self) -> dict[str, Any]:
        return json.loads((self.root / "dataset.json").read_text())

    def write_json(self, content: dict[str, Any]) -> None:
        (self.root / "dataset.json").write_text(json.dumps(content))

    def edit_json(self, **changes: Any) -> None:
        """Set keys of dataset.json; a value of ``None`` removes the key."""
        content = self.dataset_json()
        for key, value in changes.items():
            if value is None:
                content.pop(key, None)
            else:
                content[key] = value
        self.write_json(content)

    def write(self, path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
        """(Re)write one file of the dataset with nibabel."""
        return write_nifti(path, array, self.affine if affine is None else affine)

    def truncate(self, path: Path) -> None:
        """Keep the first half of the file's bytes."""
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


MakeDataset = Callable[..., SyntheticDataset]


@pytest.fixture
def make_dataset(tmp_path: Path) -> MakeDataset:
    """Factory: ``make_dataset(num_train=3, num_test=1, ending=".nii.gz", name="ds")``."""

    def make(
        num_train: int = 3,
        num_test: int = 1,
        ending: str = ".nii.gz",
        name: str = "ds",
        labels: dict[str, int] | None = None,
    ) -> SyntheticDataset:
        root = tmp_path / name
        for folder in ("imagesTr", "labelsTr", "imagesTs"):
            (root / folder).mkdir(parents=True)
        ds = SyntheticDataset(root, ending, label_values=dict(labels or LABELS))
        ds.write_json(
            {
                "name": name,
                "channel_names": {str(i): n for i, n in enumerate(CHANNELS)},
                "labels": labels or LABELS,
                "numTraining": num_train,
                "file_ending": ending,
            }
        )
        rng = np.random.default_rng(0)
        # Written in reverse order: the reader must sort.
        cases = [(f"case_{i:03d}", "train") for i in range(num_train)]
        cases += [(f"test_{i:03d}", "test") for i in range(num_test)]
        for case, subset in reversed(cases):
            label = make_label(rng)
            channels = np.stack(
                [
                    (label * 10.0 * (c + 1) + 5.0 + rng.normal(0, 1, SHAPE)).astype(np.float32)
                    for c in range(len(CHANNELS))
                ]
            )
            for c in range(len(CHANNELS)):
                write_nifti(ds.image_path(case, c, subset), channels[c])
            ds.images[case] = channels
            if subset == "train":
                write_nifti(ds.label_path(case), label)
                ds.labels[case] = label
                ds.train_ids.insert(0, case)
            else:
                ds.test_ids.insert(0, case)
        return ds

    return make


@pytest.fixture
def dataset(make_dataset: MakeDataset) -> SyntheticDataset:
    """A valid dataset: 3 training cases, 1 unlabelled test case, 2 channels, 3 labels."""
    return make_dataset()


def _dataset_error(call: Callable[[], object], *fragments: str) -> str:
    from medseg.errors import DatasetError

    with pytest.raises(DatasetError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def dataset_error() -> Callable[..., str]:
    """``dataset_error(call, *fragments)``: ``call()`` raises a one-line DatasetError with all
    ``fragments`` in its message; returns the message."""
    return _dataset_error
