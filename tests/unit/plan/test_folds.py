"""Case-level K-fold split: deterministic, every case validated once, bad folds refused."""

from __future__ import annotations

import pytest

from medseg.errors import ConfigError
from medseg.plan.folds import default_folds, make_fold_split

IDS = [f"case_{i:02d}" for i in range(12)]


def test_folds_are_deterministic_and_partition_the_cases() -> None:
    splits = [make_fold_split(IDS, k, 5, seed=0) for k in range(5)]
    again = [make_fold_split(list(reversed(IDS)), k, 5, seed=0) for k in range(5)]
    assert splits == again  # input order does not matter
    val = [c for s in splits for c in s.val]
    assert sorted(val) == IDS  # every case validated exactly once
    assert sorted(len(s.val) for s in splits) == [2, 2, 2, 3, 3]
    for s in splits:
        assert not set(s.train) & set(s.val) and len(s.train) + len(s.val) == 12
    other = [make_fold_split(IDS, k, 5, seed=1).val for k in range(5)]
    assert other != [s.val for s in splits]
    record = splits[2].to_dict()
    assert record["fold"] == 2 and record["folds"] == 5 and record["val"] == list(splits[2].val)


@pytest.mark.parametrize(
    "fold, folds, match",
    [
        (5, 5, r"--fold 5 is outside 0..4"),
        (-1, 5, r"--fold -1 is outside"),
        (0, 1, r"--folds 1 must be"),
        (0, 13, r"--folds 13 needs at least 13 training cases"),
    ],
)
def test_bad_folds(fold: int, folds: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_fold_split(IDS, fold, folds)


def test_default_folds() -> None:
    assert default_folds(12) == 5 and default_folds(3) == 3 and default_folds(2) == 2
