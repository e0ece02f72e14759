"""The nnU-Net export's FP32 parity rule and where it finds the dataset (no nnU-Net run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.export.nnunet_data import find_nnunet_dataset, fp32_parity


def _logits(scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((2, 3, 8, 16, 16))).astype(np.float32)


def test_large_logits_pass_within_relative_tolerance() -> None:
    ref = _logits(30.0)
    got = ref * np.float32(1 + 4e-5)  # float32-sized relative error
    parity = fp32_parity(ref, got)
    assert parity["max_abs_diff"] > 1e-3  # the old absolute bar refused this
    assert parity["passed"] and parity["max_tolerance_ratio"] < 1
    assert parity["logit_range"] > 30


def test_argmax_or_softmax_or_tolerance_failures() -> None:
    ref = _logits(1.0)
    assert not fp32_parity(ref, ref + _logits(0.01, seed=1))["passed"]
    flipped = ref.copy()
    flipped[:, [0, 1]] = flipped[:, [1, 0]]
    parity = fp32_parity(ref, flipped)
    assert not parity["passed"] and parity["argmax_agreement"] < 0.999
    bad = ref.copy()
    bad[0, 0, 0, 0, 0] = np.nan
    assert not fp32_parity(ref, bad)["passed"]
    assert fp32_parity(ref, ref)["passed"]


def _raw(root: Path) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    return root


def test_dataset_found_from_env_or_beside_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for env in ("nnUNet_raw", "nnUNet_preprocessed"):
        monkeypatch.delenv(env, raising=False)
    result = tmp_path / "nnUNet_results" / "Dataset007_X" / "T__P__3d_fullres"
    source = {"result_folder": str(result)}
    assert find_nnunet_dataset(source, "P_3d_fullres") is None
    pre = tmp_path / "nnUNet_preprocessed" / "Dataset007_X" / "P_3d_fullres"
    pre.mkdir(parents=True)
    (pre / "case.b2nd").write_bytes(b"")
    assert find_nnunet_dataset(source, "P_3d_fullres") == ("preprocessed", pre)
    beside = _raw(tmp_path / "nnUNet_raw" / "Dataset007_X")
    assert find_nnunet_dataset(source, "P_3d_fullres") == ("raw", beside)
    elsewhere = _raw(tmp_path / "data" / "raw" / "Dataset007_X")
    monkeypatch.setenv("nnUNet_raw", str(elsewhere.parent))
    assert find_nnunet_dataset(source, "P_3d_fullres") == ("raw", elsewhere)
    assert find_nnunet_dataset({}, "P_3d_fullres") is None


def test_calibration_dataset_with_labels_the_model_does_not_have_is_refused(
    toy_data: Path, tmp_path: Path
) -> None:
    """Issue 22 item 20: a calibration dataset of another task is refused by name, before any
    preprocessing (hand-made run folder: a refusal test)."""
    pytest.importorskip("nnunetv2")
    from medseg.errors import DatasetError
    from medseg.export.nnunet_export import preprocessed_training_cases

    run = tmp_path / "run"
    run.mkdir()
    spec = json.loads((toy_data / "dataset.json").read_text())
    model_labels = dict(list(spec["labels"].items())[:2])  # the model knows fewer classes
    (run / "dataset.json").write_text(json.dumps({**spec, "labels": model_labels}))
    with pytest.raises(DatasetError, match="are not classes of the imported model") as info:
        preprocessed_training_cases(toy_data, run, "2d")
    assert str(toy_data / "dataset.json") in str(info.value)
