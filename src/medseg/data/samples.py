"""From a dataset folder to training arrays: recipe, split, normalised network-size slices."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.nnunet import DatasetSpec, NnUNetDataset
from medseg.data.slicing import SliceRef, Split, make_split
from medseg.errors import DatasetError
from medseg.transforms.preprocessing import Geometry, Recipe, bring_to_size, normalize_volume
from medseg.transforms.volume import Volume

__all__ = ["SliceSet", "TrainingData", "dataset_fingerprint", "load_training_data", "recipe_for"]


@dataclass(frozen=True)
class SliceSet:
    """Network-size slices of one side of the split.

    Attributes:
        refs: where each slice comes from, in order.
        images: ``(N, C, H, W)`` float32, normalised and padded/resized per the recipe.
        labels: ``(N, H, W)`` uint8 class indices at network size.
        geometries: how each slice was brought to network size (undo with
            :func:`~medseg.transforms.preprocessing.restore_size`).
    """

    refs: tuple[SliceRef, ...]
    images: np.ndarray
    labels: np.ndarray
    geometries: tuple[Geometry, ...]

    def __len__(self) -> int:
        return len(self.refs)


@dataclass(frozen=True)
class TrainingData:
    """What a training run needs from its dataset."""

    spec: DatasetSpec
    recipe: Recipe
    split: Split
    train: SliceSet
    val: SliceSet
    fingerprint: str


def recipe_for(spec: DatasetSpec, volumes: list[Volume], slice_axis: int) -> Recipe:
    """The preprocessing recipe for a dataset, chosen the way nnU-Net chooses it.

    Channels named ``CT`` get a fixed window: the 0.5th to 99.5th percentile of the labelled
    foreground intensities over all training cases. Any other channel (MR sequences) gets
    per-volume percentile clipping and z-score over the nonzero foreground. Mixing CT and
    non-CT channels in one dataset is not supported.
    """
    is_ct = [name.upper() == "CT" for name in spec.channel_names]
    if any(is_ct) and not all(is_ct):
        raise DatasetError(
            f"{spec.root}/dataset.json mixes CT and non-CT channels {list(spec.channel_names)}; "
            "one normalisation per dataset is supported: use all-CT or all-MR channels"
        )
    if all(is_ct):
        values = np.concatenate(
            [v.image[:, v.label > 0].ravel() for v in volumes if v.label is not None]
        )
        lo, hi = np.percentile(values, (0.5, 99.5))
        return Recipe(modality="CT", ct_window=(float(lo), float(hi)), slice_axis=slice_axis)
    return Recipe(modality="MR", slice_axis=slice_axis)


def dataset_fingerprint(dataset: NnUNetDataset) -> str:
    """sha256 over dataset.json and every training file's name and bytes (hex, 16 chars)."""
    digest = hashlib.sha256((dataset.root / "dataset.json").read_bytes())
    for case in dataset.cases("train"):
        for path in (*case.images, *([case.label] if case.label else [])):
            digest.update(path.name.encode())
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def _slice_set(
    refs: tuple[SliceRef, ...],
    normalised: dict[str, np.ndarray],
    volumes: dict[str, Volume],
    recipe: Recipe,
) -> SliceSet:
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    geometries: list[Geometry] = []
    for ref in refs:
        image = np.take(normalised[ref.case_id], ref.index, axis=ref.axis + 1)
        label_volume = volumes[ref.case_id].label
        assert label_volume is not None  # training cases always have labels (checked on open)
        label = np.take(label_volume, ref.index, axis=ref.axis)
        image, label_out, geometry = bring_to_size(image, recipe, label)
        assert label_out is not None  # a label in gives a label out
        images.append(image)
        labels.append(label_out)
        geometries.append(geometry)
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DatasetError(
            f"slices come out in different network sizes {sorted(shapes)}; cases differ in "
            "in-plane shape: use a resize recipe (a fixed target size) for this dataset"
        )
    return SliceSet(
        refs,
        np.stack(images).astype(np.float32),
        np.stack(labels).astype(np.uint8),
        tuple(geometries),
    )


def load_training_data(
    dataset_dir: Path,
    slice_axis: int,
    val_fraction: float,
    seed: int,
    recipe: Recipe | None = None,
) -> TrainingData:
    """Read a dataset folder and return its normalised train and validation slices.

    Args:
        dataset_dir: nnU-Net raw dataset folder.
        slice_axis: axis to slice along.
        val_fraction: validation share (of cases, or of slice blocks for a single case).
        seed: split seed.
        recipe: the preprocessing to apply (a trained model's); ``None`` chooses one for
            this dataset with :func:`recipe_for`.
    """
    dataset = NnUNetDataset.open(dataset_dir)
    spec = dataset.spec
    if len(spec.labels) < 2:
        raise DatasetError(
            f"{dataset_dir}/dataset.json declares {len(spec.labels)} label(s) {dict(spec.labels)}; "
            "training needs background and at least one class"
        )
    volumes = {v.case_id: v for v in (dataset.load_case(c) for c in dataset.cases("train"))}
    if recipe is None:
        recipe = recipe_for(spec, list(volumes.values()), slice_axis)
    elif recipe.slice_axis != slice_axis:
        raise DatasetError(f"recipe slices along axis {recipe.slice_axis}, asked for {slice_axis}")
    split = make_split(
        {cid: v.shape[slice_axis] for cid, v in volumes.items()}, slice_axis, val_fraction, seed
    )
    normalised = {cid: normalize_volume(v.image, recipe) for cid, v in volumes.items()}
    return TrainingData(
        spec=spec,
        recipe=recipe,
        split=split,
        train=_slice_set(split.train, normalised, volumes, recipe),
        val=_slice_set(split.val, normalised, volumes, recipe),
        fingerprint=dataset_fingerprint(dataset),
    )
