"""Cutting volumes into 2D samples, and the deterministic train/validation split.

Volumes are segmented slice by slice along one axis. The split never lets one case's
slices leak across train and validation when there are several cases (case-level split).
A dataset of a single case (the embedded MNI152 brain) can only be split by slices; then
validation takes whole blocks of consecutive slices, and the slices next to each block
are left out of training, so neighbouring, nearly identical slices do not sit on both
sides. That split is labelled ``"slice-level"`` wherever it is recorded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medseg.errors import ConfigError
from medseg.transforms.volume import Volume

__all__ = ["Slice", "SliceRef", "Split", "iter_slices", "make_split", "take_slice"]


@dataclass(frozen=True, order=True)
class SliceRef:
    """One 2D sample: slice ``index`` along ``axis`` of case ``case_id``."""

    case_id: str
    axis: int
    index: int

    def __str__(self) -> str:
        return f"{self.case_id}:{'xyz'[self.axis]}={self.index:03d}"


@dataclass(frozen=True)
class Slice:
    """A 2D sample cut from a volume.

    Attributes:
        ref: where it comes from.
        image: ``(C, H, W)`` float32; ``H, W`` are the two remaining volume axes in order.
        label: ``(H, W)`` integer class indices, or ``None``.
    """

    ref: SliceRef
    image: np.ndarray
    label: np.ndarray | None


def take_slice(volume: Volume, axis: int, index: int) -> Slice:
    """Cut slice ``index`` along volume ``axis`` (0, 1, 2 of ``(X, Y, Z)``)."""
    _check_axis(axis)
    depth = volume.shape[axis]
    if not 0 <= index < depth:
        raise ConfigError(f"slice index {index} is outside 0..{depth - 1} along axis {axis}")
    image = np.take(volume.image, index, axis=axis + 1)
    label = None if volume.label is None else np.take(volume.label, index, axis=axis)
    return Slice(SliceRef(volume.case_id, axis, index), image, label)


def iter_slices(volume: Volume, axis: int) -> Iterator[Slice]:
    """Every slice of ``volume`` along ``axis``, in order."""
    _check_axis(axis)
    for index in range(volume.shape[axis]):
        yield take_slice(volume, axis, index)


@dataclass(frozen=True)
class Split:
    """A deterministic train/validation split of slices.

    Attributes:
        kind: ``"case-level"`` (cases are wholly train or wholly validation) or
            ``"slice-level"`` (a single case: blocks of slices, see the module docstring).
        train: the training slices.
        val: the validation slices.
        excluded: slices left out of both (the guard slices around validation blocks).
        description: one sentence saying how the split was made, for logs and manifests.
    """

    kind: Literal["case-level", "slice-level"]
    train: tuple[SliceRef, ...]
    val: tuple[SliceRef, ...]
    excluded: tuple[SliceRef, ...]
    description: str

    @property
    def train_cases(self) -> tuple[str, ...]:
        return tuple(sorted({r.case_id for r in self.train}))

    @property
    def val_cases(self) -> tuple[str, ...]:
        return tuple(sorted({r.case_id for r in self.val}))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: kind, description, cases, and the slice ids of each side."""
        return {
            "kind": self.kind,
            "description": self.description,
            "train_cases": list(self.train_cases),
            "val_cases": list(self.val_cases),
            "train": [str(r) for r in self.train],
            "val": [str(r) for r in self.val],
            "excluded": [str(r) for r in self.excluded],
        }


def make_split(
    depths: Mapping[str, int],
    axis: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    block: int = 8,
    guard: int = 2,
) -> Split:
    """Split the slices of a dataset into train and validation, deterministically.

    Args:
        depths: number of slices along ``axis`` for each case id.
        axis: the slice axis the depths refer to.
        val_fraction: share of cases (or, for a single case, of slice blocks) for validation.
        seed: the same seed and inputs always give the same split.
        block: single case only: validation takes whole blocks of this many slices.
        guard: single case only: slices on each side of a validation block left out of training.
    """
    _check_axis(axis)
    if not depths:
        raise ConfigError("cannot split an empty dataset: no cases")
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction {val_fraction} must be between 0 and 1 (exclusive)")
    if len(depths) >= 2:
        return _case_level(depths, axis, val_fraction, seed)
    ((case_id, depth),) = depths.items()
    return _slice_level(case_id, depth, axis, val_fraction, seed, block, guard)


def _case_level(depths: Mapping[str, int], axis: int, fraction: float, seed: int) -> Split:
    cases = sorted(depths)
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = min(len(cases) - 1, max(1, round(fraction * len(cases))))
    val_cases = {cases[i] for i in order[:n_val]}
    train: list[SliceRef] = []
    val: list[SliceRef] = []
    for case in cases:
        refs = [SliceRef(case, axis, i) for i in range(depths[case])]
        (val if case in val_cases else train).extend(refs)
    description = (
        f"case-level split (seed {seed}): {len(cases) - n_val} training cases, "
        f"{n_val} validation cases; no case has slices on both sides"
    )
    return Split("case-level", tuple(train), tuple(val), (), description)


def _slice_level(
    case_id: str, depth: int, axis: int, fraction: float, seed: int, block: int, guard: int
) -> Split:
    if block < 1 or guard < 0:
        raise ConfigError(f"block ({block}) must be >= 1 and guard ({guard}) >= 0")
    n_blocks = -(-depth // block)
    every = max(2, round(1.0 / fraction))
    if n_blocks < every:
        raise ConfigError(
            f"case {case_id} has {depth} slices along axis {axis}: too few for a slice-level "
            f"split in blocks of {block} with a validation share of {fraction}"
        )
    offset = seed % every
    val_idx: set[int] = set()
    for b in range(offset, n_blocks, every):
        val_idx.update(range(b * block, min((b + 1) * block, depth)))
    near = {j for i in val_idx for j in range(i - guard, i + guard + 1)}
    excluded_idx = (near - val_idx) & set(range(depth))
    train_idx = set(range(depth)) - val_idx - excluded_idx

    def refs(idx: set[int]) -> tuple[SliceRef, ...]:
        return tuple(SliceRef(case_id, axis, i) for i in sorted(idx))

    description = (
        f"slice-level split of a single case ({case_id}; seed {seed}): validation is every "
        f"{every}th block of {block} consecutive slices ({len(val_idx)} slices), {guard} slices "
        f"on each side of a block are left out ({len(excluded_idx)}), {len(train_idx)} train "
        "slices; train and validation come from the same subject"
    )
    return Split("slice-level", refs(train_idx), refs(val_idx), refs(excluded_idx), description)


def _check_axis(axis: int) -> None:
    if axis not in (0, 1, 2):
        raise ConfigError(f"slice axis {axis} must be 0, 1 or 2 (of X, Y, Z)")
