"""Deterministic case-level cross-validation folds (``medseg train --fold K --folds N``).

The cases are sorted by id, shuffled with a seeded generator and cut into ``N`` folds of
nearly equal size (the first ``len % N`` folds hold one case more), as scikit-learn's
``KFold(shuffle=True)`` does for nnU-Net. Fold ``K`` validates on its cases and trains on
all others; every case is validated exactly once over the ``N`` folds. The same ids, seed
and ``N`` always give the same folds, on any machine: the split depends on the case ids,
not on file order or content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError

__all__ = ["DEFAULT_FOLDS", "FoldSplit", "default_folds", "make_fold_split"]

#: Folds of the seed paper's evaluation (and nnU-Net's default).
DEFAULT_FOLDS = 5


@dataclass(frozen=True)
class FoldSplit:
    """One fold of a case-level K-fold split.

    Attributes:
        fold: the fold index ``K`` in ``0..folds-1``.
        folds: the number of folds ``N``.
        seed: the shuffling seed.
        train: the training case ids, sorted.
        val: the validation case ids of this fold, sorted.
    """

    fold: int
    folds: int
    seed: int
    train: tuple[str, ...]
    val: tuple[str, ...]

    def __post_init__(self) -> None:
        if set(self.train) & set(self.val):
            raise ConfigError(f"cases {sorted(set(self.train) & set(self.val))} on both sides")

    @property
    def description(self) -> str:
        """One sentence for logs and manifests."""
        return (
            f"case-level fold {self.fold} of {self.folds} (seed {self.seed}): "
            f"{len(self.train)} training cases, {len(self.val)} validation cases; no case "
            "has slices on both sides"
        )

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's ``split`` record: fold, folds, seed, case ids of each side."""
        return {
            "kind": "case-level",
            "fold": self.fold,
            "folds": self.folds,
            "seed": self.seed,
            "train": list(self.train),
            "val": list(self.val),
            "description": self.description,
        }


def default_folds(num_cases: int) -> int:
    """Folds used when ``--folds`` is not given: 5, or one per case for fewer cases."""
    return max(2, min(DEFAULT_FOLDS, num_cases))


def make_fold_split(case_ids: Sequence[str], fold: int, folds: int, seed: int = 0) -> FoldSplit:
    """Fold ``fold`` of a deterministic ``folds``-fold split of ``case_ids``.

    Args:
        case_ids: the training case ids (any order; duplicates are an error).
        fold: which fold validates, ``0..folds-1``.
        folds: number of folds, ``2..len(case_ids)``.
        seed: shuffling seed.

    Raises:
        ConfigError: ``--fold`` outside ``0..folds-1``, fewer than 2 folds, more folds than
            cases, duplicate ids.
    """
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate case ids in {ids}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"--folds {folds!r} must be an integer >= 2")
    if len(ids) < folds:
        raise ConfigError(
            f"--folds {folds} needs at least {folds} training cases; the dataset has "
            f"{len(ids)}: use --folds {max(2, len(ids))} or fewer"
            if len(ids) >= 2
            else f"--folds {folds} needs at least 2 training cases; the dataset has {len(ids)}"
        )
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold!r} is outside 0..{folds - 1} (--folds {folds})")
    order = np.random.default_rng(seed).permutation(len(ids))
    chunks = np.array_split(order, folds)
    val = {ids[i] for i in chunks[fold]}
    return FoldSplit(
        fold=fold,
        folds=folds,
        seed=seed,
        train=tuple(i for i in ids if i not in val),
        val=tuple(i for i in ids if i in val),
    )
