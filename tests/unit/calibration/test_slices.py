"""Calibration slice selection on the real MNI152 training split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.calibration import MIN_CALIBRATION_SLICES, CalibrationSet, select_calibration_slices
from medseg.data.samples import SliceSet, TrainingData
from medseg.errors import ConfigError, DatasetError


def _subset(slices: SliceSet, idx: list[int]) -> SliceSet:
    return SliceSet(
        tuple(slices.refs[i] for i in idx),
        slices.images[idx].copy(),
        slices.labels[idx].copy(),
        tuple(slices.geometries[i] for i in idx),
    )


def _foreground(slices: SliceSet) -> list[int]:
    return [i for i, label in enumerate(slices.labels) if label.any()]


def test_selection_is_deterministic_stratified_and_covers_every_class(
    mni_training: TrainingData,
) -> None:
    train, labels = mni_training.train, mni_training.spec.labels
    first = select_calibration_slices(train, labels, num_slices=32, max_background_share=0.1)
    again = select_calibration_slices(train, labels, num_slices=32, max_background_share=0.1)
    assert first.refs == again.refs
    np.testing.assert_array_equal(first.images, again.images)
    assert len(first) == 32 and first.images.shape == (32, *train.images.shape[1:])
    assert first.images.dtype == np.float32

    # every class covered, background-only slices within the limit
    assert all(first.class_coverage[name] >= 1 for name in ("CSF", "GM", "WM"))
    index = {ref: i for i, ref in enumerate(train.refs)}
    background_only = sum(not train.labels[index[ref]].any() for ref in first.refs)
    assert background_only == first.background_only <= 0.1 * len(first)

    # spread along the depth: the selection spans most of the brain's extent in the split
    brain = [train.refs[i].index for i in _foreground(train)]
    chosen = sorted(ref.index for ref in first.refs)
    assert chosen[-1] - chosen[0] >= 0.85 * (max(brain) - min(brain))
    gaps = np.diff(chosen)
    assert gaps.max() <= 0.25 * (max(brain) - min(brain))  # no large unsampled stretch

    assert "stratified" in first.method and "seed 0" in first.method
    manifest = first.to_manifest()
    json.dumps(manifest)
    assert manifest["slice_ids"] == [str(r) for r in first.refs]
    assert manifest["num_slices"] == 32 and manifest["class_coverage"] == first.class_coverage


def test_a_missing_class_is_swapped_in(mni_training: TrainingData) -> None:
    train = mni_training.train
    labels = train.labels.copy()
    # CSF (1) only in one slice near the top of the brain: no quantile pick lands on it.
    keep = _foreground(train)[-3]
    labels[labels == 1] = 2
    labels[keep][train.labels[keep] == 1] = 1
    rare = SliceSet(train.refs, train.images, labels, train.geometries)
    chosen = select_calibration_slices(rare, mni_training.spec.labels, num_slices=16)
    assert train.refs[keep] in chosen.refs
    assert chosen.class_coverage["CSF"] == 1
    assert len(chosen) == 16  # swapped in for a neighbour, not added


def test_npz_round_trip(mni_training: TrainingData, tmp_path: Path) -> None:
    chosen = select_calibration_slices(mni_training.train, mni_training.spec.labels, 12)
    path = chosen.save_npz(tmp_path / "calibration.npz")
    with np.load(path) as raw:
        assert {"images", "slice_ids"} <= set(raw.files)
        assert list(raw["slice_ids"]) == [str(r) for r in chosen.refs]
    loaded = CalibrationSet.load_npz(path)
    np.testing.assert_array_equal(loaded.images, chosen.images)
    assert loaded.refs == chosen.refs
    assert loaded.method == chosen.method
    assert dict(loaded.class_coverage) == dict(chosen.class_coverage)
    assert loaded.to_manifest() == chosen.to_manifest()
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.npz"]  # no temp file left


def test_hand_made_npz_loads_and_bad_ids_are_rejected(tmp_path: Path) -> None:
    images = np.zeros((2, 1, 8, 8), np.float32)
    np.savez(tmp_path / "ok.npz", images=images, slice_ids=np.array(["a:z=001", "b:x=010"]))
    loaded = CalibrationSet.load_npz(tmp_path / "ok.npz")
    assert [str(r) for r in loaded.refs] == ["a:z=001", "b:x=010"]
    np.savez(tmp_path / "bad.npz", images=images, slice_ids=np.array(["a:z=001", "oops"]))
    with pytest.raises(DatasetError, match="'oops'"):
        CalibrationSet.load_npz(tmp_path / "bad.npz")


def test_fewer_slices_than_asked_warns_and_uses_all(mni_training: TrainingData) -> None:
    train = mni_training.train
    small = _subset(train, _foreground(train)[:20])
    with pytest.warns(UserWarning, match="asked for 64 calibration slices but only 20"):
        chosen = select_calibration_slices(small, mni_training.spec.labels, num_slices=64)
    assert chosen.refs == small.refs
    assert chosen.requested == 64 and chosen.available == 20


def test_fewer_than_the_minimum_is_an_error(mni_training: TrainingData) -> None:
    small = _subset(mni_training.train, _foreground(mni_training.train)[:6])
    with pytest.raises(DatasetError, match=f"only 6 usable .* at least {MIN_CALIBRATION_SLICES}"):
        select_calibration_slices(small, mni_training.spec.labels)


def test_background_only_slices_do_not_count_beyond_their_share(
    mni_training: TrainingData,
) -> None:
    train = mni_training.train
    background = [i for i, label in enumerate(train.labels) if not label.any()]
    assert len(background) >= 10
    mostly_empty = _subset(train, background + _foreground(train)[:5])
    with pytest.raises(DatasetError, match="background-only"):
        select_calibration_slices(mostly_empty, mni_training.spec.labels, num_slices=16)


def test_nan_slice_is_named(mni_training: TrainingData) -> None:
    train = mni_training.train
    images = train.images.copy()
    images[7, 0, 100, 100] = np.nan
    broken = SliceSet(train.refs, images, train.labels, train.geometries)
    with pytest.raises(DatasetError, match=str(train.refs[7])):
        select_calibration_slices(broken, mni_training.spec.labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_slices": 0}, "num_slices"), ({"max_background_share": 1.5}, "max_background_share")],
)
def test_bad_options(mni_training: TrainingData, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        select_calibration_slices(mni_training.train, mni_training.spec.labels, **kwargs)
