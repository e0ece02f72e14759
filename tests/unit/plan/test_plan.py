"""The planner: fingerprint rules, plans.json round trip, foreign plans and bad datasets."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medseg.data.mni152_cohort import write_mni152_cohort
from medseg.data.nifti import save_nifti
from medseg.errors import ConfigError, DatasetError
from medseg.plan.fingerprint import compute_fingerprint
from medseg.plan.planner import (
    Plan,
    check_plan_matches,
    load_plan,
    make_plan,
    plan_dataset,
    save_plan,
)

pytest.importorskip("nibabel")
pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cohort") / "c"
    write_mni152_cohort(out, cases=4, seed=3, inplane_mm=(2.0, 3.0), thickness_mm=(4.0, 6.0))
    return out


def _write_case(
    root: Path, case: str, image: np.ndarray, label: np.ndarray, affine: np.ndarray
) -> None:
    save_nifti(root / "imagesTr" / f"{case}_0000.nii.gz", image, affine)
    save_nifti(root / "labelsTr" / f"{case}.nii.gz", label, affine)


def _dataset(
    root: Path, channel: str, spacings: list[tuple[float, float, float]], labels=None
) -> Path:
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, spacing in enumerate(spacings):
        label = np.zeros((40, 36, 12), dtype=np.uint8)
        label[10:30, 8:28, 2:10] = 1
        label[15:25, 12:20, 4:8] = 2
        base = -900.0 if channel == "CT" else 20.0
        image = (base + 400.0 * label + rng.normal(0, 20, label.shape)).astype(np.float32)
        _write_case(root, f"c_{i:03d}", image, label, np.diag([*spacing, 1.0]))
    spec = {
        "channel_names": {"0": channel},
        "labels": labels or {"background": 0, "organ": 1, "lesion": 2},
        "numTraining": len(spacings),
        "file_ending": ".nii.gz",
        "name": f"synthetic-{channel}",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def test_plan_of_the_cohort(cohort: Path, tmp_path: Path) -> None:
    plan = plan_dataset(cohort)
    fp = compute_fingerprint(cohort)
    assert plan.slice_axis == 2  # 4-6 mm slices vs 2-3 mm pixels: the thick axis
    assert plan.target_spacing == pytest.approx(tuple(np.median(fp.spacings[:, :2], axis=0)))
    resampled = np.median(fp.shapes[:, :2] * fp.spacings[:, :2] / plan.target_spacing, axis=0)
    for size, patch in zip(resampled, plan.patch_size, strict=True):
        assert patch % 32 == 0 and size <= patch < size + 32
    assert plan.modality == "MR" and plan.ct_window is None and plan.mirror_axes == (0, 1)
    assert plan.orientation == "RAS" and len(fp.to_dict()["source_orientations"]) == 4
    recipe = plan.recipe()
    assert recipe.size_policy == "window" and recipe.patch_size == plan.patch_size
    assert recipe.target_spacing == plan.target_spacing
    path = save_plan(plan, tmp_path / "plans.json")
    assert load_plan(path) == plan
    capped = plan_dataset(cohort, (64, 64))
    assert capped.patch_size == (64, 64)


def test_ct_dataset_gets_window_and_zscore_and_isotropic_axis(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ct", "CT", [(1.0, 1.0, 1.2), (0.9, 0.9, 1.0), (1.1, 1.1, 1.1)])
    plan = plan_dataset(root)
    assert plan.modality == "CT" and plan.ct_window is not None and plan.ct_zscore is not None
    lo, hi = plan.ct_window
    assert -1000 < lo < -400 < hi < 0  # foreground (-500 .. -100 HU) percentiles
    mean, std = plan.ct_zscore
    assert lo < mean < hi and std > 0
    assert plan.slice_axis == 2  # near-isotropic: the axis with the fewest voxels (12)
    recipe = plan.recipe()
    assert recipe.modality == "CT" and recipe.ct_zscore == plan.ct_zscore


def test_lateral_classes_are_not_mirrored(tmp_path: Path) -> None:
    labels = {"background": 0, "kidney_left": 1, "kidney_right": 2}
    root = _dataset(tmp_path / "lat", "MR", [(1.0, 1.0, 3.0)] * 2, labels)
    assert plan_dataset(root).mirror_axes == ()


def test_foreign_plan_needs_force(cohort: Path, tmp_path: Path) -> None:
    plan = plan_dataset(cohort)
    other = tmp_path / "other"
    shutil.copytree(cohort, other)
    (other / "labelsTr" / "MNIC_004.nii.gz").unlink()
    for f in (other / "imagesTr").glob("MNIC_004_*"):
        f.unlink()
    spec = json.loads((other / "dataset.json").read_text())
    spec["numTraining"] = 3
    (other / "dataset.json").write_text(json.dumps(spec))
    fp = compute_fingerprint(other)
    args = (fp.hash, fp.channel_names, fp.labels, str(other))
    with pytest.raises(ConfigError, match=r"fingerprint .* --force"):
        check_plan_matches(plan, *args)
    check_plan_matches(plan, *args, force=True)
    with pytest.raises(ConfigError, match="channels"):
        check_plan_matches(plan, fp.hash, ("T1", "T2"), fp.labels, str(other), force=True)


def test_bad_datasets_and_plan_files(tmp_path: Path) -> None:
    far = _dataset(tmp_path / "far", "MR", [(1.0, 1.0, 60.0), (1.0, 1.0, 3.0)])
    with pytest.raises(DatasetError, match=r"c_000_0000.nii.gz: voxel spacing .* at most 50 mm"):
        plan_dataset(far)
    extra = _dataset(tmp_path / "extra", "MR", [(1.0, 1.0, 3.0)] * 2)
    shutil.copy(extra / "imagesTr" / "c_001_0000.nii.gz", extra / "imagesTr" / "c_001_0001.nii.gz")
    with pytest.raises(DatasetError, match=r"c_001_0001.nii.gz"):
        plan_dataset(extra)
    with pytest.raises(ConfigError, match="multiples of 32"):
        plan_dataset(far, (100, 128))
    with pytest.raises(ConfigError, match="does not exist"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "old.json").write_text(json.dumps({"plan_version": 99}))
    with pytest.raises(ConfigError, match="plan_version 99"):
        load_plan(tmp_path / "old.json")


def test_plan_file_errors_name_the_file_and_key(tmp_path: Path) -> None:
    plan = make_plan(compute_fingerprint(_dataset(tmp_path / "ds", "MR", [(1.0, 1.0, 3.0)] * 3)))
    good = plan.to_dict()

    def refused(data: dict[str, Any]) -> str:
        path = tmp_path / "plans.json"
        path.write_text(json.dumps(data))
        with pytest.raises(ConfigError) as info:
            load_plan(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(str(path)), message
        return message

    bad = copy.deepcopy(good)
    bad["configuration"]["patch_size"] = ["256", 256]
    assert "configuration.patch_size[0] must be an integer, got str '256'" in refused(bad)
    bad = copy.deepcopy(good)
    del bad["dataset"]["labels"]
    assert "missing key dataset.labels" in refused(bad)
    bad = copy.deepcopy(good)
    bad["configuration"]["patch_szie"] = [256, 256]
    assert "unknown key configuration.patch_szie" in refused(bad)
    bad = copy.deepcopy(good)
    bad["configuration"]["patch_size"] = [100, 256]
    assert "configuration: plan patch_size" in refused(bad)
    assert refused([1, 2]).endswith("(write a plan with: medseg plan DATASET --out plans.json)")


def test_plan_validates_its_fields() -> None:
    good = dict(
        dataset="d",
        fingerprint="f",
        channel_names=("MR",),
        labels={"background": 0, "a": 1},
        modality="MR",
        slice_axis=2,
        target_spacing=(1.0, 1.0),
        patch_size=(64, 64),
        batch_size=4,
    )
    Plan(**good)
    for key, value, match in [
        ("patch_size", (48, 64), "multiples of 32"),
        ("patch_size", (512, 512), "exceeds the cap"),
        ("target_spacing", (0.0, 1.0), "target_spacing"),
        ("target_spacing", (float("nan"), 1.0), "target_spacing"),
        ("slice_axis", 3, "slice_axis"),
    ]:
        with pytest.raises(ConfigError, match=match):
            Plan(**{**good, key: value})


def test_save_plan_goes_through_the_output_guard(cohort: Path, tmp_path: Path) -> None:
    """Issue 22: the library's save_plan never writes over the dataset's own files, and
    ``force`` replaces only a JSON file."""
    plan = plan_dataset(cohort)
    spec = cohort / "dataset.json"
    before = spec.read_bytes()
    with pytest.raises(ConfigError, match="lies inside the input dataset"):
        save_plan(plan, spec, force=True, dataset=cohort)
    assert spec.read_bytes() == before
    scan = tmp_path / "scan.png"
    scan.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ConfigError, match="replaces only a JSON file"):
        save_plan(plan, scan, force=True)
    path = save_plan(plan, tmp_path / "plans.json")
    with pytest.raises(ConfigError, match="pass --force"):
        save_plan(plan, path)
    assert load_plan(save_plan(plan, path, force=True)) == plan
