"""The MNI152 cohort: per-case geometry, orientations that differ, labels carried exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.data.mni152 import mni152_volume
from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.data.nnunet import NnUNetDataset
from medseg.errors import ConfigError
from medseg.plan.fingerprint import to_training_orientation
from medseg.transforms.orientation import axis_codes

pytest.importorskip("nibabel")
pytest.importorskip("scipy")

#: Coarse voxels keep the files small and the test fast.
COARSE = {"inplane_mm": (2.5, 3.5), "thickness_mm": (4.0, 6.0)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c"
    write_mni152_cohort(out, cases=4, seed=7, **COARSE)
    return out


def test_cases_differ_in_geometry_and_orientation(cohort: Path) -> None:
    records = json.loads((cohort / "cohort.json").read_text())["cases"]
    dataset = NnUNetDataset.open(cohort)
    assert dataset.case_ids() == tuple(r["case_id"] for r in records)
    codes = []
    for record in records:
        volume = dataset.load_case(record["case_id"])
        assert axis_codes(volume.affine) == record["orientation"]
        assert volume.image.dtype == np.float32 and volume.shape == tuple(record["shape"])
        ras, _ = to_training_orientation(volume)
        # after reorientation the thick (slice) axis is always S, the last axis
        assert ras.spacing[2] == pytest.approx(record["thickness_mm"], rel=1e-4)
        assert ras.spacing[0] == pytest.approx(record["inplane_mm"], rel=1e-4)
        codes.append(record["orientation"])
    assert len(set(codes)) == len(codes)  # 4 cases: 4 different voxel orders
    spec = json.loads((cohort / "dataset.json").read_text())
    assert "ONE template brain" in spec["description"]


def test_labels_follow_the_image_geometry(cohort: Path) -> None:
    """Each case's label at a voxel equals the template label at that voxel's world point."""
    _, template_label, template_affine = mni152_volume()
    inverse = np.linalg.inv(template_affine)
    dataset = NnUNetDataset.open(cohort)
    for case_id in dataset.case_ids():
        volume = dataset.load_case(case_id)
        assert volume.label is not None
        idx = np.argwhere(np.ones(volume.shape, dtype=bool))[::7]
        world = volume.affine[:3, :3] @ idx.T + volume.affine[:3, 3:4]
        vox = np.rint(inverse[:3, :3] @ world + inverse[:3, 3:4]).astype(int)
        inside = np.all((vox >= 0) & (vox < np.array(template_label.shape)[:, None]), axis=0)
        expected = np.zeros(idx.shape[0], dtype=np.uint8)
        expected[inside] = template_label[tuple(vox[:, inside])]
        got = volume.label[tuple(idx.T)]
        assert np.mean(got == expected) > 0.995, case_id
        assert set(np.unique(got)) == {0, 1, 2, 3}
        # the image is dark where the label is background outside the head
        assert (
            volume.image[0][volume.label > 0].mean() > 3 * volume.image[0][volume.label == 0].mean()
        )


def test_same_seed_same_files_and_bad_input(cohort: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_mni152_cohort(again, cases=1, seed=7, **COARSE)
    first = NnUNetDataset.open(cohort).load_case("MNIC_001")
    second = NnUNetDataset.open(again).load_case("MNIC_001")
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.affine, second.affine)
    with pytest.raises(ConfigError, match="--cases"):
        write_mni152_cohort(tmp_path / "none", cases=0)
    with pytest.raises(ConfigError, match="thickness"):
        write_mni152_cohort(tmp_path / "bad", cases=1, thickness_mm=(0.0, 2.0))
    with pytest.raises(ConfigError):
        write_mni152_cohort(again, cases=1, seed=7, **COARSE)  # not empty, no force
    assert not (tmp_path / "none").exists() and not (tmp_path / "bad").exists()
