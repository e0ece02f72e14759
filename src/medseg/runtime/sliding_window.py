"""Sliding-window inference over 2D slices with a fixed network patch (numpy only).

The network's input is static ``(h, w)`` (the fastest TensorRT configuration: one profile,
only the batch axis varies). A slice of any size is covered by overlapping windows of that
size; each window's logits are weighted by a Gaussian importance map (sigma = 1/8 of the
patch, nnU-Net's ``compute_gaussian``) and accumulated; the sum is divided by the summed
weights and a softmax gives the probabilities. Windows of several slices share one backend
call, up to ``max_batch``. Mirroring test-time augmentation runs every flip combination of
the recipe's ``mirror_axes`` and averages the logits, as nnU-Net does.

The accumulation order is the window order, whatever the batch size, so the result (and the
argmax labels) do not depend on ``max_batch`` when the backend returns the same logits for a
window whatever else shares its batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from medseg.errors import ConfigError

__all__ = [
    "PredictBatch",
    "gaussian_importance",
    "mirror_combinations",
    "pad_to_patch",
    "predict_slices",
    "window_starts",
]

#: ``(B, C, h, w)`` float32 -> ``(B, K, h, w)`` float32 logits.
PredictBatch = Callable[[np.ndarray], np.ndarray]


def gaussian_importance(patch_size: tuple[int, int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian importance map of a window, nnU-Net's rule.

    A unit impulse at the centre ``(h // 2, w // 2)`` blurred with sigma ``sigma_scale * size``
    per axis (kernel truncated at 4 sigma, like :func:`scipy.ndimage.gaussian_filter`),
    scaled to a maximum of 1; values that come out 0 are raised to the smallest non-zero value
    so every pixel has a positive weight.

    Returns:
        ``(h, w)`` float32 in ``(0, 1]``.
    """
    if len(patch_size) != 2 or any(int(s) < 1 for s in patch_size):
        raise ConfigError(f"patch_size {patch_size} must be two positive sizes")
    if not sigma_scale > 0:
        raise ConfigError(f"sigma_scale {sigma_scale} must be > 0")
    axes = []
    for size in patch_size:
        sigma = sigma_scale * size
        radius = int(4.0 * sigma + 0.5)
        d = np.arange(size, dtype=np.float64) - size // 2
        g = np.exp(-0.5 * (d / sigma) ** 2)
        g[np.abs(d) > radius] = 0.0
        axes.append(g)
    gauss = np.outer(axes[0], axes[1])
    gauss /= gauss.max()
    positive = gauss[gauss > 0]
    gauss[gauss == 0] = positive.min()
    return gauss.astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``patch`` covering ``size`` with at least ``overlap``.

    nnU-Net's ``compute_steps_for_sliding_window``: the step is at most
    ``patch * (1 - overlap)``, the windows are spread evenly, and the first starts at 0 and the
    last ends at ``size``. ``size`` must be >= ``patch`` (pad first, see :func:`pad_to_patch`).
    """
    if patch < 1 or size < patch:
        raise ConfigError(f"window of {patch} does not fit a size of {size}; pad the slice first")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap {overlap} must be in [0, 1)")
    if size == patch:
        return [0]
    target_step = patch * (1.0 - overlap)
    num = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (num - 1)
    return [round(step * i) for i in range(num)]


def pad_to_patch(
    images: np.ndarray, patch_size: tuple[int, int]
) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Zero-pad ``(N, C, H, W)`` (centred) so that H and W are at least the patch.

    Returns:
        the padded array (the input itself when no padding is needed) and the
        ``(rows, cols)`` slices that cut the original region back out.
    """
    h, w = images.shape[-2:]
    ph, pw = max(patch_size[0] - h, 0), max(patch_size[1] - w, 0)
    top, left = ph // 2, pw // 2
    region = (slice(top, top + h), slice(left, left + w))
    if ph == 0 and pw == 0:
        return images, region
    pads = ((0, 0), (0, 0), (top, ph - top), (left, pw - left))
    return np.pad(images, pads), region


def mirror_combinations(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (slice axes 0 = H, 1 = W), the identity first."""
    axes = tuple(mirror_axes)
    if any(a not in (0, 1) for a in axes) or len(set(axes)) != len(axes):
        raise ConfigError(f"mirror_axes {axes} must be distinct slice axes among 0 (H) and 1 (W)")
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _windows(
    n: int, size: tuple[int, int], patch: tuple[int, int], overlap: float, flips: list
) -> Iterator[tuple[int, int, int, tuple[int, ...]]]:
    ys = window_starts(size[0], patch[0], overlap)
    xs = window_starts(size[1], patch[1], overlap)
    for i in range(n):
        for y in ys:
            for x in xs:
                for flip in flips:
                    yield i, y, x, flip


def predict_slices(
    images: np.ndarray,
    predict_batch: PredictBatch,
    patch_size: tuple[int, int],
    max_batch: int,
    overlap: float = 0.5,
    mirror_axes: Sequence[int] = (),
) -> np.ndarray:
    """Gaussian-weighted sliding-window probabilities of a stack of slices.

    Args:
        images: ``(N, C, H, W)`` float32, normalised and resampled; any ``H, W`` (slices
            smaller than the patch are zero-padded, centred, and cropped back).
        predict_batch: ``(B, C, h, w)`` float32 -> ``(B, K, h, w)`` float32 logits with
            ``B <= max_batch`` and ``(h, w) = patch_size``.
        patch_size: the network's static input ``(h, w)``.
        max_batch: most windows per ``predict_batch`` call (the engine profile's maximum).
        overlap: fraction of the patch that neighbouring windows share, in ``[0, 1)``.
        mirror_axes: slice axes to mirror for test-time augmentation; every combination of
            flips is run and the logits are averaged.

    Returns:
        ``(N, K, H, W)`` float32 softmax probabilities.
    """
    if images.ndim != 4:
        raise ConfigError(f"predict_slices expects (N, C, H, W), got shape {images.shape}")
    if max_batch < 1:
        raise ConfigError(f"max_batch {max_batch} must be >= 1")
    patch = (int(patch_size[0]), int(patch_size[1]))
    flips = mirror_combinations(mirror_axes)
    padded, region = pad_to_patch(images.astype(np.float32, copy=False), patch)
    n, c, h, w = padded.shape
    gauss = gaussian_importance(patch)
    acc: np.ndarray | None = None
    weight = np.zeros((h, w), dtype=np.float32)
    for y in window_starts(h, patch[0], overlap):
        for x in window_starts(w, patch[1], overlap):
            weight[y : y + patch[0], x : x + patch[1]] += gauss
    weight *= len(flips)
    batch = np.empty((max_batch, c, *patch), dtype=np.float32)
    where: list[tuple[int, int, int, tuple[int, ...]]] = []

    def flush() -> None:
        nonlocal acc
        logits = np.asarray(predict_batch(batch[: len(where)]), dtype=np.float32)
        if logits.ndim != 4 or logits.shape[0] != len(where) or logits.shape[2:] != patch:
            raise ConfigError(
                f"predict_batch returned shape {logits.shape} for {len(where)} windows of "
                f"{patch}; expected (B, K, {patch[0]}, {patch[1]})"
            )
        if acc is None:
            acc = np.zeros((n, logits.shape[1], h, w), dtype=np.float32)
        for j, (i, y, x, flip) in enumerate(where):
            out = logits[j]
            if flip:
                out = np.flip(out, axis=tuple(a + 1 for a in flip))
            acc[i, :, y : y + patch[0], x : x + patch[1]] += out * gauss
        where.clear()

    for i, y, x, flip in _windows(n, (h, w), patch, overlap, flips):
        window = padded[i, :, y : y + patch[0], x : x + patch[1]]
        batch[len(where)] = np.flip(window, axis=tuple(a + 1 for a in flip)) if flip else window
        where.append((i, y, x, flip))
        if len(where) == max_batch:
            flush()
    if where:
        flush()
    if acc is None:  # N == 0
        return np.zeros((0, 0, *images.shape[-2:]), dtype=np.float32)
    acc /= weight
    acc -= acc.max(axis=1, keepdims=True)
    np.exp(acc, out=acc)
    acc /= acc.sum(axis=1, keepdims=True)
    return np.ascontiguousarray(acc[:, :, region[0], region[1]])
