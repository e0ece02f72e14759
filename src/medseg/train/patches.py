"""Random training patches of a fixed size from slices of any size (nnU-Net's 2D sampler).

Each patch comes from one slice of one training case. With probability
``foreground_fraction`` (default 1/3, nnU-Net's ``oversample_foreground_percent``) it is
centred on a random voxel of a random foreground class present in the case (the slice is
the voxel's slice); otherwise the slice and the patch position are uniform. Slices smaller
than the patch along a side are padded with zeros (image: the normalised mean; label:
background), at a random offset. numpy only; :class:`PatchDataset` wraps the sampler for a
torch ``DataLoader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.errors import ConfigError, DatasetError
from medseg.plan.cases import crop_patch

__all__ = ["Patch", "PatchDataset", "PatchSampler", "PatchSource", "StreamSampler"]

#: Voxel positions kept per case and class for foreground-centred patches (as nnU-Net).
LOCATIONS_PER_CLASS = 10_000


@dataclass(frozen=True)
class PatchSource:
    """The slices of one case patches may come from.

    Attributes:
        case_id: the case id.
        images: ``(N, C, H, W)`` float32 (the case's slices, slice axis first; a view is fine).
        labels: ``(N, H, W)`` integer class indices.
        allowed: slice indices (into ``N``) patches may use; ``None`` = every slice.
    """

    case_id: str
    images: np.ndarray
    labels: np.ndarray
    allowed: np.ndarray | None = None


@dataclass(frozen=True)
class Patch:
    """One sample: ``image (C, h, w)`` float32, ``label (h, w)`` uint8, where it came from."""

    image: np.ndarray
    label: np.ndarray
    case_id: str
    slice_index: int
    foreground_centred: bool


class PatchSampler:
    """Draws patches of ``patch_size`` from the slices of several cases.

    Args:
        sources: the training cases.
        patch_size: ``(h, w)`` of every patch.
        foreground_fraction: share of patches centred on a foreground voxel, in ``[0, 1]``.
        seed: seeds the (subsampled) foreground locations.
    """

    def __init__(
        self,
        sources: Sequence[PatchSource],
        patch_size: tuple[int, int],
        foreground_fraction: float = 1.0 / 3.0,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= foreground_fraction <= 1.0:
            raise ConfigError(f"foreground fraction {foreground_fraction} must be in [0, 1]")
        if len(patch_size) != 2 or min(patch_size) < 1:
            raise ConfigError(f"patch size {patch_size} must be two positive sizes")
        if not sources:
            raise DatasetError("no training slices to draw patches from")
        self.patch_size = (int(patch_size[0]), int(patch_size[1]))
        self.foreground_fraction = float(foreground_fraction)
        self.sources = list(sources)
        rng = np.random.default_rng(seed)
        self._allowed: list[np.ndarray] = []
        self._locations: list[dict[int, np.ndarray]] = []
        for src in self.sources:
            if src.images.ndim != 4 or src.labels.shape != (
                src.images.shape[0],
                *src.images.shape[2:],
            ):
                raise DatasetError(
                    f"case {src.case_id}: images {src.images.shape} and labels "
                    f"{src.labels.shape} are not (N, C, H, W) with (N, H, W)"
                )
            allowed = np.arange(len(src.labels)) if src.allowed is None else np.asarray(src.allowed)
            self._allowed.append(allowed)
            self._locations.append(self._class_locations(src.labels, allowed, rng))
        weights = np.array([len(a) for a in self._allowed], dtype=np.float64)
        if weights.sum() == 0:
            raise DatasetError("no training slices to draw patches from")
        self._weights = weights / weights.sum()

    @staticmethod
    def _class_locations(
        labels: np.ndarray, allowed: np.ndarray, rng: np.random.Generator
    ) -> dict[int, np.ndarray]:
        mask = np.zeros(len(labels), dtype=bool)
        mask[allowed] = True
        out: dict[int, np.ndarray] = {}
        for value in np.unique(labels[allowed]):
            if value == 0:
                continue
            where = np.argwhere((labels == value) & mask[:, None, None])
            if len(where) > LOCATIONS_PER_CLASS:
                where = where[rng.choice(len(where), LOCATIONS_PER_CLASS, replace=False)]
            out[int(value)] = where
        return out

    @property
    def num_slices(self) -> int:
        """Training slices over all cases."""
        return int(sum(len(a) for a in self._allowed))

    def _start(self, size: int, patch: int, centre: int | None, rng: np.random.Generator) -> int:
        lo, hi = min(0, size - patch), max(0, size - patch)
        if centre is None:
            return int(rng.integers(lo, hi + 1))
        return int(np.clip(centre - patch // 2, lo, hi))

    def sample(self, rng: np.random.Generator) -> Patch:
        """One patch (see the module docstring for how it is chosen)."""
        k = int(rng.choice(len(self.sources), p=self._weights))
        src, locations = self.sources[k], self._locations[k]
        fg = bool(locations) and rng.random() < self.foreground_fraction
        if fg:
            cls = sorted(locations)[int(rng.integers(len(locations)))]
            n, ch, cw = (int(v) for v in locations[cls][int(rng.integers(len(locations[cls])))])
            centre: tuple[int | None, int | None] = (ch, cw)
        else:
            n = int(self._allowed[k][int(rng.integers(len(self._allowed[k])))])
            centre = (None, None)
        h, w = src.labels.shape[1:]
        ph, pw = self.patch_size
        top = self._start(h, ph, centre[0], rng)
        left = self._start(w, pw, centre[1], rng)
        image, label = crop_patch(src.images[n], src.labels[n], (ph, pw), top, left)
        assert label is not None
        return Patch(image, label, src.case_id, n, fg)


class PatchDataset:
    """Map-style dataset of ``(image (C, h, w) float32, label (h, w) int64)`` torch tensors.

    Item ``g`` is a global sample index over the whole run: it is sample ``i = g % length`` of
    epoch ``e = g // length + 1``, drawn with a generator seeded by ``(seed, e, i)``, and the
    augmentation is re-seeded from the same triple. A run is therefore reproducible whatever
    the number of ``DataLoader`` worker processes (each holds its own copy of the dataset),
    and a resumed run draws what the original would have.

    Args:
        sampler: the patch sampler.
        length: patches per epoch (steps x batch size).
        seed: run seed.
        transform: augmentation on ``{"image": (C, h, w), "label": (1, h, w)}`` with a
            ``set_random_state(seed=...)`` method (MONAI ``Compose``), or ``None``.
    """

    def __init__(
        self,
        sampler: PatchSampler,
        length: int,
        seed: int = 0,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.sampler = sampler
        self.length = int(length)
        self.seed = int(seed)
        self.transform = transform

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, g: int) -> tuple[Any, Any]:
        import torch

        epoch, i = divmod(int(g), self.length)
        key = [self.seed, epoch + 1, i]
        patch = self.sampler.sample(np.random.default_rng(key))
        image: Any = patch.image
        label: Any = patch.label[None].astype(np.float32)
        if self.transform is not None:
            seed = int(np.random.default_rng([*key, 1]).integers(2**31))
            self.transform.set_random_state(seed=seed)  # type: ignore[attr-defined]
            out = self.transform({"image": image, "label": label})
            image, label = out["image"], out["label"]
        image_t = torch.as_tensor(np.asarray(image, dtype=np.float32))
        label_t = torch.as_tensor(np.asarray(label)[0].round().astype(np.int64))
        return image_t, label_t


class StreamSampler:
    """Global sample indices of a run, from step ``start`` on, without end.

    Step ``s`` of a global batch ``B`` holds samples ``s*B .. s*B+B-1``; rank ``r`` of ``W``
    processes (``torchrun``) takes every ``W``-th of them, starting at ``r``, so the ranks
    together draw exactly the global batch of a one-process run.
    """

    def __init__(self, batch: int, start_step: int = 0, rank: int = 0, world: int = 1) -> None:
        if not 0 <= rank < world or batch < world:
            raise ConfigError(
                f"batch size {batch} must be at least the number of processes {world}"
            )
        self.batch, self.start, self.rank, self.world = batch, start_step, rank, world

    def local_batch(self) -> int:
        """Samples per step on this rank."""
        return len(range(self.rank, self.batch, self.world))

    def __iter__(self) -> Iterator[int]:
        step = self.start
        while True:
            base = step * self.batch
            yield from range(base + self.rank, base + self.batch, self.world)
            step += 1
