"""Slicing volumes and the deterministic train/validation split."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.slicing import SliceRef, iter_slices, make_split, take_slice
from medseg.errors import ConfigError
from medseg.transforms.volume import Volume


def _volume() -> Volume:
    image = np.arange(2 * 4 * 5 * 6, dtype=np.float32).reshape(2, 4, 5, 6)
    label = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 3).astype(np.uint8)
    return Volume("case_a", image, label, np.eye(4), (1.0, 1.0, 2.0))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_along_each_axis_have_the_remaining_axes(axis: int) -> None:
    vol = _volume()
    slices = list(iter_slices(vol, axis))
    assert len(slices) == vol.shape[axis]
    for s in slices:
        expected = tuple(n for i, n in enumerate(vol.shape) if i != axis)
        assert s.image.shape == (2, *expected)
        assert s.label is not None and s.label.shape == expected
    np.testing.assert_array_equal(slices[3].image, np.take(vol.image, 3, axis=axis + 1))


def test_take_slice_rejects_out_of_range_index_and_axis() -> None:
    with pytest.raises(ConfigError, match="outside"):
        take_slice(_volume(), 2, 6)
    with pytest.raises(ConfigError, match="axis"):
        take_slice(_volume(), 3, 0)


def test_slice_ref_str_is_readable_and_sortable() -> None:
    assert str(SliceRef("MNI152_001", 2, 7)) == "MNI152_001:z=007"
    assert sorted([SliceRef("b", 2, 1), SliceRef("a", 2, 9)])[0].case_id == "a"


def test_case_level_split_never_shares_a_case_and_is_deterministic() -> None:
    depths = {f"case_{i:02d}": 10 + i for i in range(10)}
    split = make_split(depths, axis=2, val_fraction=0.3, seed=7)
    assert split.kind == "case-level"
    assert set(split.train_cases).isdisjoint(split.val_cases)
    assert len(split.val_cases) == 3
    assert len(split.train) + len(split.val) == sum(depths.values())
    assert make_split(depths, axis=2, val_fraction=0.3, seed=7) == split
    assert make_split(depths, axis=2, val_fraction=0.3, seed=8).val_cases != split.val_cases


def test_two_cases_give_one_each() -> None:
    split = make_split({"a": 5, "b": 5}, axis=0, val_fraction=0.2)
    assert len(split.train_cases) == 1 and len(split.val_cases) == 1


def test_single_case_split_is_slice_level_in_blocks_with_guards() -> None:
    split = make_split({"MNI152_001": 189}, axis=2, val_fraction=0.2, seed=0, block=8, guard=2)
    assert split.kind == "slice-level"
    assert "single case" in split.description
    train = {r.index for r in split.train}
    val = {r.index for r in split.val}
    excluded = {r.index for r in split.excluded}
    assert train | val | excluded == set(range(189))
    assert not (train & val) and not (train & excluded) and not (val & excluded)
    # every validation slice is at least guard+1 slices away from every training slice
    assert min(abs(t - v) for t in train for v in val) >= 3
    assert 0.15 < len(val) / 189 < 0.25
    # validation covers the whole depth, not one end of it
    assert min(val) < 40 and max(val) > 140


def test_split_rejects_bad_fraction_and_tiny_single_case() -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        make_split({"a": 10, "b": 10}, axis=2, val_fraction=1.0)
    with pytest.raises(ConfigError, match="too few"):
        make_split({"a": 12}, axis=2)
    with pytest.raises(ConfigError, match="empty"):
        make_split({}, axis=2)


def test_split_to_dict_names_slices() -> None:
    d = make_split({"a": 3, "b": 3}, axis=2, seed=0).to_dict()
    assert d["kind"] == "case-level"
    assert all(":z=" in s for s in d["train"] + d["val"])
