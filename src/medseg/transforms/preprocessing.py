"""Preprocessing as pure numpy functions described by a serialisable recipe.

A :class:`Recipe` says how a volume becomes network input: intensity normalisation
(CT windowing, optionally followed by nnU-Net's dataset-wide z-score, or MR percentile
clipping + z-score over the foreground), the slice axis, the in-plane spacing the network
works at, and how a slice is brought to a size the network accepts (divisible by 16: padding,
or resizing to a fixed size; or ``"window"``: a fixed network patch slid over the resampled
slice, see :mod:`medseg.runtime.sliding_window`). The recipe is stored in the checkpoint and
in the bundle manifest, so the scanner side applies exactly what the model was trained with.

Everything here is numpy only: the lean runtime imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medseg.config_io import to_json_dict
from medseg.errors import ConfigError
from medseg.schema import FORBID_EXTRA, parse

__all__ = [
    "PATCH_MULTIPLE",
    "SIZE_MULTIPLE",
    "Geometry",
    "Recipe",
    "bring_to_size",
    "clip_percentiles_zscore",
    "normalize_volume",
    "padded_size",
    "resize_bilinear",
    "resize_nearest",
    "restore_size",
    "window_ct",
]

#: Every spatial size the networks see is a multiple of this (four 2x downsamplings).
SIZE_MULTIPLE = 16
#: Sliding-window patches are multiples of this (five 2x downsamplings, as nnU-Net's 2D nets).
PATCH_MULTIPLE = 32
#: Largest in-plane target spacing a recipe accepts, in mm.
MAX_SPACING_MM = 50.0

Modality = Literal["CT", "MR", "none"]
SizePolicy = Literal["pad", "resize", "window"]


@dataclass(frozen=True)
class Recipe:
    """How a volume is turned into network input; JSON-serialisable via :meth:`to_dict`.

    Attributes:
        modality: ``"CT"`` (fixed window), ``"MR"`` (per-volume percentile clip and z-score
            over the foreground, per channel) or ``"none"`` (cast to float32 only).
        ct_window: ``(lo, hi)`` in Hounsfield units for CT; clipped, then scaled to [0, 1].
        percentiles: ``(lo, hi)`` percentiles for MR clipping, default ``(0.5, 99.5)``.
        foreground_threshold: MR voxels strictly above this value (in the raw intensities)
            are the foreground whose mean and std define the z-score.
        slice_axis: volume axis (0, 1 or 2 of ``(X, Y, Z)``) along which 2D slices are cut.
        size_policy: ``"pad"`` (zero-pad each slice, centred, up to the next multiple of 16),
            ``"resize"`` (bilinear resize to ``target_size``, a multiple of 16) or
            ``"window"`` (the slice, resampled to ``target_spacing``, is covered by
            overlapping windows of ``patch_size``; the network input is static).
        target_size: ``(H, W)`` for ``size_policy="resize"``; ``None`` otherwise.
        patch_size: network input ``(H, W)`` for ``size_policy="window"``, each a multiple of
            32; ``None`` otherwise.
        target_spacing: in-plane spacing in mm the network works at: the spacings of the two
            axes of the ``(X, Y, Z)`` volume other than ``slice_axis``, in axis order.
            ``None``: no resampling.
        mirror_axes: slice axes (0 = H, 1 = W of a ``(C, H, W)`` slice) flipped in training;
            mirroring test-time augmentation uses them.
        ct_zscore: for CT, ``(mean, std)`` of the dataset's foreground intensities after
            clipping to ``ct_window``; when set, CT becomes ``(clip(x) - mean) / std``
            (nnU-Net's CT scheme) instead of ``[0, 1]`` scaling.
        overlap: sliding-window overlap, a fraction of the patch in ``[0, 1)``.
    """

    __pydantic_config__ = FORBID_EXTRA  # validated inside medseg.json (medseg.schema)

    modality: Modality = "MR"
    ct_window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    foreground_threshold: float = 0.0
    slice_axis: int = 2
    size_policy: SizePolicy = "pad"
    target_size: tuple[int, int] | None = None
    patch_size: tuple[int, int] | None = None
    target_spacing: tuple[float, float] | None = None
    mirror_axes: tuple[int, ...] = ()
    ct_zscore: tuple[float, float] | None = None
    overlap: float = 0.5

    def __post_init__(self) -> None:
        if self.modality not in ("CT", "MR", "none"):
            raise ConfigError(f"recipe modality {self.modality!r} is not one of 'CT', 'MR', 'none'")
        if self.modality == "CT":
            if self.ct_window is None or len(self.ct_window) != 2:
                raise ConfigError("a CT recipe needs ct_window=(lo, hi) in HU, e.g. (-1000, 400)")
            if not self.ct_window[0] < self.ct_window[1]:
                raise ConfigError(f"ct_window {self.ct_window} must have lo < hi")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles {self.percentiles} must satisfy 0 <= lo < hi <= 100")
        if self.slice_axis not in (0, 1, 2):
            raise ConfigError(f"slice_axis {self.slice_axis} must be 0, 1 or 2")
        if self.size_policy not in ("pad", "resize", "window"):
            raise ConfigError(
                f"size_policy {self.size_policy!r} must be 'pad', 'resize' or 'window'"
            )
        if self.size_policy == "resize":
            if self.target_size is None or len(self.target_size) != 2:
                raise ConfigError("size_policy 'resize' needs target_size=(H, W)")
            if any(s <= 0 or s % SIZE_MULTIPLE for s in self.target_size):
                raise ConfigError(
                    f"target_size {self.target_size} must be positive multiples of {SIZE_MULTIPLE}"
                )
        elif self.target_size is not None:
            raise ConfigError("target_size is only used with size_policy 'resize'")
        self._check_window_fields()

    def _check_window_fields(self) -> None:
        """Validate the sliding-window, spacing, mirroring and CT z-score fields."""
        if self.size_policy == "window":
            if self.patch_size is None or len(self.patch_size) != 2:
                raise ConfigError("size_policy 'window' needs patch_size=(H, W), e.g. (256, 256)")
            if any(not isinstance(s, int) or s <= 0 or s % PATCH_MULTIPLE for s in self.patch_size):
                raise ConfigError(
                    f"patch_size {self.patch_size} must be positive multiples of "
                    f"{PATCH_MULTIPLE}, e.g. (256, 256)"
                )
        elif self.patch_size is not None:
            raise ConfigError("patch_size is only used with size_policy 'window'")
        if self.target_spacing is not None:
            if len(self.target_spacing) != 2:
                raise ConfigError(
                    f"target_spacing {self.target_spacing} must be two in-plane spacings in mm"
                )
            for s in self.target_spacing:
                if not (np.isfinite(s) and 0.0 < s <= MAX_SPACING_MM):
                    raise ConfigError(
                        f"target_spacing {self.target_spacing} must be finite, > 0 and "
                        f"<= {MAX_SPACING_MM:g} mm"
                    )
        if any(a not in (0, 1) for a in self.mirror_axes) or len(set(self.mirror_axes)) != len(
            self.mirror_axes
        ):
            raise ConfigError(
                f"mirror_axes {self.mirror_axes} must be distinct slice axes among 0 (H) and 1 (W)"
            )
        if self.ct_zscore is not None:
            if self.modality != "CT":
                raise ConfigError("ct_zscore is only used with modality 'CT'")
            if len(self.ct_zscore) != 2 or not all(np.isfinite(v) for v in self.ct_zscore):
                raise ConfigError(f"ct_zscore {self.ct_zscore} must be finite (mean, std)")
            if not self.ct_zscore[1] > 0:
                raise ConfigError(f"ct_zscore std {self.ct_zscore[1]} must be > 0")
        if not (np.isfinite(self.overlap) and 0.0 <= self.overlap < 1.0):
            raise ConfigError(f"overlap {self.overlap} must be in [0, 1)")

    @property
    def pipeline_kind(self) -> str:
        """The runtime pipeline that runs this recipe (:mod:`medseg.runtime.pipelines`):
        ``"window"`` for a sliding-window recipe, ``"slices"`` for whole slices padded or
        resized to network size."""
        return "window" if self.size_policy == "window" else "slices"

    @property
    def report_axis(self) -> int:
        """The volume axis reports slice along (overlays, HD95 blocks): the slice axis."""
        return self.slice_axis

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return to_json_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        return parse(cls, data, "preprocessing recipe")


@dataclass(frozen=True)
class Geometry:
    """How one slice was brought to network size, so :func:`restore_size` can undo it.

    Attributes:
        original: ``(H, W)`` of the slice before padding or resizing.
        padded: ``(H, W)`` the network saw (the slice itself for ``"window"``: the sliding
            window pads internally).
        pad_before: rows and columns of zero padding added before the slice ``(top, left)``;
            ``(0, 0)`` for a resize or a window.
        policy: ``"pad"``, ``"resize"`` or ``"window"``.
    """

    original: tuple[int, int]
    padded: tuple[int, int]
    pad_before: tuple[int, int]
    policy: SizePolicy


def window_ct(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip CT intensities to ``[lo, hi]`` HU and scale them linearly to ``[0, 1]`` (float32)."""
    if not lo < hi:
        raise ConfigError(f"CT window ({lo}, {hi}) must have lo < hi")
    clipped = np.clip(image.astype(np.float32, copy=False), lo, hi)
    return (clipped - np.float32(lo)) / np.float32(hi - lo)


def clip_percentiles_zscore(
    image: np.ndarray,
    percentiles: tuple[float, float] = (0.5, 99.5),
    foreground: np.ndarray | None = None,
) -> np.ndarray:
    """MR normalisation: clip to foreground percentiles, then z-score over the foreground.

    Args:
        image: one channel, any shape, any real dtype.
        percentiles: ``(lo, hi)`` percentiles of the foreground intensities to clip to.
        foreground: boolean mask of the same shape; ``None`` or empty means every voxel.

    Returns:
        float32 array of the same shape; background voxels are normalised with the same
        statistics (they end up at ``(clip(0) - mean) / std``).
    """
    image = image.astype(np.float32, copy=False)
    whole = foreground is None or not foreground.any()
    values = image.ravel() if whole else image[foreground]
    lo, hi = np.percentile(values, percentiles)
    # the foreground's statistics after clipping: clip(image)[fg] is clip(image[fg]); one
    # pass over the volume fewer, and no full-size mask when every voxel counts
    fg = np.clip(values, lo, hi)
    mean = float(fg.mean())
    std = float(fg.std())
    out = np.clip(image, lo, hi)  # float64 (lo, hi are): normalised in place, then float32
    out -= mean
    out /= max(std, 1e-8)
    return out.astype(np.float32)


def normalize_volume(image: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Apply the recipe's intensity normalisation to a ``(C, X, Y, Z)`` volume, per channel.

    Statistics are computed over the whole volume (not per slice) so every slice of a case is
    normalised the same way, at training time and on the scanner.
    """
    if image.ndim != 4:
        raise ConfigError(f"normalize_volume expects (C, X, Y, Z), got shape {image.shape}")
    out = np.empty(image.shape, dtype=np.float32)
    for c in range(image.shape[0]):
        channel = image[c]
        if recipe.modality == "CT":
            assert recipe.ct_window is not None  # guaranteed by Recipe.__post_init__
            if recipe.ct_zscore is not None:
                lo, hi = recipe.ct_window
                mean, std = recipe.ct_zscore
                clipped = np.clip(channel.astype(np.float32, copy=False), lo, hi)
                out[c] = (clipped - np.float32(mean)) / np.float32(std)
            else:
                out[c] = window_ct(channel, *recipe.ct_window)
        elif recipe.modality == "MR":
            out[c] = clip_percentiles_zscore(
                channel, recipe.percentiles, channel > recipe.foreground_threshold
            )
        else:
            out[c] = channel
    return out


def padded_size(size: tuple[int, int], multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """Smallest ``(H, W)`` >= ``size`` whose sides are multiples of ``multiple``."""
    return (-(-size[0] // multiple) * multiple, -(-size[1] // multiple) * multiple)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``(..., H, W)`` to ``size`` (half-pixel centres).

    Matches ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` for
    upsampling; float32 out.
    """
    h_in, w_in = image.shape[-2:]
    h_out, w_out = size
    y0, y1, wy = _linear_taps(h_in, h_out)
    x0, x1, wx = _linear_taps(w_in, w_out)
    img = image.astype(np.float32, copy=False)
    top = img[..., y0, :] * (1 - wy)[:, None] + img[..., y1, :] * wy[:, None]
    return (top[..., x0] * (1 - wx) + top[..., x1] * wx).astype(np.float32)


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes of ``(..., H, W)``; keeps the dtype."""
    h_in, w_in = labels.shape[-2:]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h_in / size[0]).astype(np.int64), h_in - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w_in / size[1]).astype(np.int64), w_in - 1)
    return labels[..., rows[:, None], cols[None, :]]


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of 1D linear interpolation with half-pixel centres."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def bring_to_size(
    image: np.ndarray, recipe: Recipe, label: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, Geometry]:
    """Pad or resize a ``(C, H, W)`` slice (and its ``(H, W)`` label) to network size.

    Padding is centred with zeros (label 0 = background); resizing is bilinear for the image
    and nearest-neighbour for the label. ``"window"`` leaves the slice as it is (the sliding
    window pads internally). The returned :class:`Geometry` undoes it.
    """
    if image.ndim != 3:
        raise ConfigError(f"bring_to_size expects a (C, H, W) slice, got shape {image.shape}")
    original = (int(image.shape[1]), int(image.shape[2]))
    if recipe.size_policy == "window":
        geometry = Geometry(original, original, (0, 0), "window")
        return image.astype(np.float32, copy=False), label, geometry
    if recipe.size_policy == "resize":
        assert recipe.target_size is not None  # guaranteed by Recipe.__post_init__
        size = recipe.target_size
        out_label = None if label is None else resize_nearest(label, size)
        geometry = Geometry(original, size, (0, 0), "resize")
        return resize_bilinear(image, size), out_label, geometry
    size = padded_size(original)
    top = (size[0] - original[0]) // 2
    left = (size[1] - original[1]) // 2
    pads = ((top, size[0] - original[0] - top), (left, size[1] - original[1] - left))
    padded = np.pad(image, ((0, 0), *pads)).astype(np.float32, copy=False)
    padded_label = None if label is None else np.pad(label, pads)
    return padded, padded_label, Geometry(original, size, (top, left), "pad")


def restore_size(array: np.ndarray, geometry: Geometry, is_label: bool = False) -> np.ndarray:
    """Undo :func:`bring_to_size` on ``(..., H, W)`` network output (labels or probabilities).

    Args:
        array: network-size output, last two axes ``geometry.padded``.
        geometry: what :func:`bring_to_size` returned for that slice.
        is_label: nearest-neighbour for label maps, bilinear for probabilities/logits.
    """
    if tuple(array.shape[-2:]) != tuple(geometry.padded):
        raise ConfigError(
            f"array of spatial size {tuple(array.shape[-2:])} does not match the geometry's "
            f"network size {geometry.padded}"
        )
    if geometry.policy == "window":
        return array
    if geometry.policy == "resize":
        if is_label:
            return resize_nearest(array, geometry.original)
        return resize_bilinear(array, geometry.original)
    top, left = geometry.pad_before
    h, w = geometry.original
    return array[..., top : top + h, left : left + w]
