"""On-the-fly augmentation of 2D training slices, with MONAI's dictionary transforms.

Random rotation and scaling (the seed paper's multi-scale augmentation), flips along the
axes the anatomy allows, intensity scaling and shifting, Gaussian noise, and an optional
random crop to the training patch size. Images are interpolated bilinearly, labels with
nearest neighbour, so labels stay class indices.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from medseg.train.config import TrainConfig

__all__ = ["SliceDataset", "build_augmentation"]


def build_augmentation(config: TrainConfig, crop: bool = True) -> Any:
    """A seeded MONAI ``Compose`` over ``{"image": (C, H, W), "label": (1, H, W)}`` samples.

    Args:
        config: the (resolved) training options.
        crop: end with a random crop to ``config.patch_size`` (whole-slice training);
            planned training draws patches of that size already.
    """
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
    )

    keys = ["image", "label"]
    transforms: list[Any] = []
    if config.augment:
        transforms.append(
            RandAffined(
                keys=keys,
                prob=0.8,
                rotate_range=(math.radians(config.rotate_deg),),
                scale_range=(config.scale, config.scale),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
        flips = config.flip_axes or ()
        transforms += [RandFlipd(keys=keys, prob=0.5, spatial_axis=a) for a in flips]
        transforms += [
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
            RandGaussianNoised(keys="image", prob=0.3, std=0.05),
        ]
    if crop and config.patch_size is not None:
        transforms.append(
            RandSpatialCropd(keys=keys, roi_size=config.patch_size, random_size=False)
        )
    compose = Compose(transforms)
    compose.set_random_state(seed=config.seed)
    return compose


class SliceDataset:
    """Map-style dataset of ``(image (C, H, W) float32, label (H, W) int64)`` torch tensors.

    Args:
        images: ``(N, C, H, W)`` float32 network-size slices.
        labels: ``(N, H, W)`` class indices.
        transform: a callable on ``{"image", "label"}`` dicts (e.g. :func:`build_augmentation`),
            or ``None`` for validation.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Any = None) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        image: Any = self.images[i]
        label: Any = self.labels[i][None].astype(np.float32)
        if self.transform is not None:
            out = self.transform({"image": image, "label": label})
            image, label = out["image"], out["label"]
        image_t = torch.as_tensor(np.asarray(image, dtype=np.float32))
        label_t = torch.as_tensor(np.asarray(label)[0].round().astype(np.int64))
        return image_t, label_t
