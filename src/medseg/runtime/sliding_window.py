"""Sliding-window inference over 2D or 3D patches with a fixed network patch (numpy only).

The network's input is static (the fastest TensorRT configuration: one profile, only the
batch axis varies). An image of any size is covered by overlapping windows of the patch; each
window's logits are weighted by a Gaussian importance map (sigma = 1/8 of the patch, nnU-Net's
``compute_gaussian``) and accumulated; the sum is divided by the summed weights. Windows share
backend calls, up to ``max_batch`` per call. Mirroring test-time augmentation runs every flip
combination of ``mirror_axes`` and averages the logits, as nnU-Net does. The window starts
(``compute_steps_for_sliding_window``), the centred zero padding of images smaller than the
patch (``pad_nd_image``) and the Gaussian are nnU-Net v2's rules, so :func:`predict_windows`
gives nnU-Net's ``predict_sliding_window_return_logits`` (which accumulates in float16; this
module in float32, or, ``accumulate="float16"``, with every rounding of nnU-Net's float16
accumulator: then nnU-Net's logits bit for bit). :func:`predict_ensemble_windows` averages
the logits of several folds, as ``nnUNetPredictor.predict_logits_from_preprocessed_data`` does.

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
    "accumulation_gaussian",
    "gaussian_importance",
    "mirror_combinations",
    "pad_to_patch",
    "predict_ensemble_windows",
    "predict_slices",
    "predict_windows",
    "window_logits",
    "window_starts",
]

#: ``(B, C, *patch)`` float32 -> ``(B, K, *patch)`` float32 logits.
PredictBatch = Callable[[np.ndarray], np.ndarray]


def gaussian_importance(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Gaussian importance map of a window, nnU-Net's ``compute_gaussian``.

    A unit impulse at the centre ``size // 2`` blurred with sigma ``sigma_scale * size`` per
    axis (kernel truncated at 4 sigma, like :func:`scipy.ndimage.gaussian_filter`), scaled to a
    maximum of 1; values that come out 0 are raised to the smallest non-zero value so every
    voxel has a positive weight.

    Args:
        patch_size: ``(h, w)`` or ``(d, h, w)``.
        sigma_scale: sigma as a fraction of the patch size.

    Returns:
        ``patch_size`` float32 in ``(0, 1]``.
    """
    gauss = gaussian_importance_f64(patch_size, sigma_scale)
    positive = gauss[gauss > 0]
    gauss[gauss == 0] = positive.min()
    return gauss.astype(np.float32)


def gaussian_importance_f64(patch_size: Sequence[int], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """:func:`gaussian_importance` in float64, before zeros are raised (maximum 1)."""
    if len(patch_size) not in (2, 3) or any(int(s) < 1 for s in patch_size):
        raise ConfigError(f"patch_size {tuple(patch_size)} must be two or three positive sizes")
    if not sigma_scale > 0:
        raise ConfigError(f"sigma_scale {sigma_scale} must be > 0")
    gauss = np.ones((), dtype=np.float64)
    for size in patch_size:
        sigma = sigma_scale * size
        radius = int(4.0 * sigma + 0.5)
        d = np.arange(size, dtype=np.float64) - size // 2
        g = np.exp(-0.5 * (d / sigma) ** 2)
        g[np.abs(d) > radius] = 0.0
        gauss = np.multiply.outer(gauss, g)
    gauss /= gauss.max()
    return gauss


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``patch`` covering ``size`` with at least ``overlap``.

    nnU-Net's ``compute_steps_for_sliding_window`` with ``tile_step_size = 1 - overlap``: the
    step is at most ``patch * (1 - overlap)``, the windows are spread evenly, and the first
    starts at 0 and the last ends at ``size``. ``size`` must be >= ``patch`` (pad first, see
    :func:`pad_to_patch`).
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
    images: np.ndarray, patch_size: Sequence[int]
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Zero-pad the last ``len(patch_size)`` axes (centred) to at least the patch.

    nnU-Net's ``pad_nd_image``: an odd amount of padding puts the extra voxel after the
    content.

    Args:
        images: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` (any leading axes).
        patch_size: ``(h, w)`` or ``(d, h, w)``.

    Returns:
        the padded array (the input itself when no padding is needed) and the slices of the
        spatial axes that cut the original region back out.
    """
    nd = len(patch_size)
    spatial = images.shape[-nd:]
    missing = [max(int(p) - s, 0) for p, s in zip(patch_size, spatial, strict=True)]
    region = tuple(slice(m // 2, m // 2 + s) for m, s in zip(missing, spatial, strict=True))
    if not any(missing):
        return images, region
    pads = [(0, 0)] * (images.ndim - nd) + [(m // 2, m - m // 2) for m in missing]
    return np.pad(images, pads), region


def mirror_combinations(mirror_axes: Sequence[int], ndim: int = 2) -> list[tuple[int, ...]]:
    """Every subset of ``mirror_axes`` (patch axes ``0..ndim-1``), the identity first.

    nnU-Net's order: the identity, then single axes, then pairs, ...
    """
    axes = tuple(int(a) for a in mirror_axes)
    if any(a not in range(ndim) for a in axes) or len(set(axes)) != len(axes):
        raise ConfigError(
            f"mirror_axes {axes} must be distinct patch axes among {tuple(range(ndim))}"
        )
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _windows(
    n: int, size: Sequence[int], patch: tuple[int, ...], overlap: float, flips: list
) -> Iterator[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    starts = [window_starts(s, p, overlap) for s, p in zip(size, patch, strict=True)]
    for i in range(n):
        for corner in itertools.product(*starts):
            for flip in flips:
                yield i, corner, flip


def window_logits(
    images: np.ndarray,
    predict_batch: PredictBatch,
    patch_size: Sequence[int],
    max_batch: int,
    overlap: float = 0.5,
    mirror_axes: Sequence[int] = (),
    accumulate: str = "float32",
) -> np.ndarray:
    """Gaussian-weighted sliding-window logits of a stack of images (the shared loop).

    Args:
        images: ``(N, C, *S)`` float32 with ``len(S) == len(patch_size)`` (2 or 3); images
            smaller than the patch are zero-padded, centred, and cropped back.
        predict_batch: ``(B, C, *patch)`` float32 -> ``(B, K, *patch)`` float32 logits with
            ``B <= max_batch``.
        patch_size: the network's static spatial input.
        max_batch: most windows per ``predict_batch`` call (the engine profile's maximum).
        overlap: fraction of the patch that neighbouring windows share, in ``[0, 1)``
            (nnU-Net's ``tile_step_size`` is ``1 - overlap``).
        mirror_axes: patch axes to mirror for test-time augmentation; every combination of
            flips is run and the logits are averaged.
        accumulate: ``"float32"`` (default), or ``"float16"`` to reproduce nnU-Net v2's
            accumulator (``torch.half``, Gaussian scaled by 10): with it, voxels covered only
            by window corners underflow to logits 0 exactly as in ``nnUNetPredictor``.

    Returns:
        ``(N, K, *S)`` float32 logits (no softmax).
    """
    patch = tuple(int(p) for p in patch_size)
    nd = len(patch)
    if nd not in (2, 3) or images.ndim != nd + 2:
        raise ConfigError(
            f"sliding window expects (N, C, *S) with {nd} spatial axes for a patch of {patch}, "
            f"got shape {images.shape}"
        )
    if max_batch < 1:
        raise ConfigError(f"max_batch {max_batch} must be >= 1")
    if accumulate not in ("float32", "float16"):
        raise ConfigError(f"accumulate {accumulate!r} must be 'float32' or 'float16'")
    flips = mirror_combinations(mirror_axes, nd)
    padded, region = pad_to_patch(images.astype(np.float32, copy=False), patch)
    n, c = padded.shape[:2]
    size = padded.shape[2:]
    acc_dtype = np.float16 if accumulate == "float16" else np.float32
    gauss = accumulation_gaussian(patch, acc_dtype)
    acc: np.ndarray | None = None
    weight = np.zeros(size, dtype=acc_dtype)
    starts = [window_starts(s, p, overlap) for s, p in zip(size, patch, strict=True)]
    for corner in itertools.product(*starts):
        weight[tuple(slice(o, o + p) for o, p in zip(corner, patch, strict=True))] += gauss
    batch = np.empty((max_batch, c, *patch), dtype=np.float32)
    where: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
    pending: list[np.ndarray] = []  # the flips of the current window, mean taken at the last

    def flush() -> None:
        nonlocal acc
        logits = np.asarray(predict_batch(batch[: len(where)]), dtype=np.float32)
        if logits.ndim != nd + 2 or logits.shape[0] != len(where) or logits.shape[2:] != patch:
            raise ConfigError(
                f"predict_batch returned shape {logits.shape} for {len(where)} windows of "
                f"{patch}; expected (B, K, {', '.join(map(str, patch))})"
            )
        if acc is None:
            acc = np.zeros((n, logits.shape[1], *size), dtype=acc_dtype)
        for j, (i, corner, flip) in enumerate(where):
            out = logits[j]
            pending.append(np.flip(out, axis=tuple(a + 1 for a in flip)) if flip else out)
            if len(pending) < len(flips):
                continue
            mean = pending[0].copy() if len(pending) == 1 else np.sum(pending, axis=0)
            if len(pending) > 1:
                mean /= np.float32(len(pending))
            pending.clear()
            mean *= gauss  # float32 * (float32 | float16) -> float32, as torch in place
            box = tuple(slice(o, o + p) for o, p in zip(corner, patch, strict=True))
            at: tuple[int | slice, ...] = (i, slice(None), *box)
            view = acc[at]
            view[...] = view + mean  # computed in float32, stored in the accumulator's dtype
        where.clear()

    for i, corner, flip in _windows(n, size, patch, overlap, flips):
        box = tuple(slice(o, o + p) for o, p in zip(corner, patch, strict=True))
        at: tuple[int | slice, ...] = (i, slice(None), *box)
        window = padded[at]
        batch[len(where)] = np.flip(window, axis=tuple(a + 1 for a in flip)) if flip else window
        where.append((i, corner, flip))
        if len(where) == max_batch:
            flush()
    if where:
        flush()
    if acc is None:  # N == 0
        return np.zeros((0, 0, *images.shape[2:]), dtype=np.float32)
    acc /= weight
    return np.ascontiguousarray(acc[(slice(None), slice(None), *region)], dtype=np.float32)


def accumulation_gaussian(patch: tuple[int, ...], dtype: type) -> np.ndarray:
    """The window weight in the accumulator's dtype.

    float16 is nnU-Net's CPU/GPU accumulation: ``compute_gaussian(value_scaling_factor=10,
    dtype=torch.half)``, zeros (underflow) raised to the smallest non-zero value. torch casts
    float64 to half through float32 (two roundings), and so does this: rounding float64 to
    float16 directly moves 8 of the 122,880 weights of a (40, 48, 64) patch by one float16 step.
    """
    if dtype == np.float32:
        return gaussian_importance(patch)
    g = (gaussian_importance_f64(patch) * 10.0).astype(np.float32).astype(np.float16)
    g[g == 0] = g[g > 0].min()
    return g


def predict_windows(
    image: np.ndarray,
    predict_batch: PredictBatch,
    patch_size: Sequence[int],
    max_batch: int,
    overlap: float = 0.5,
    mirror_axes: Sequence[int] = (),
    accumulate: str = "float32",
) -> np.ndarray:
    """Sliding-window logits of one image, nnU-Net's ``predict_sliding_window_return_logits``.

    Args:
        image: ``(C, *S)`` float32, preprocessed. ``len(S) == len(patch_size)`` (2D or 3D
            patches), or ``(C, D, H, W)`` with a 2D patch: an nnU-Net ``2d`` configuration,
            every slice along the first spatial axis run on its own.
        predict_batch: ``(B, C, *patch)`` -> ``(B, K, *patch)`` float32 logits.
        patch_size: the network's static spatial input ``(h, w)`` or ``(d, h, w)``.
        max_batch: most windows per call.
        overlap: ``1 - tile_step_size`` (nnU-Net's default 0.5).
        mirror_axes: patch axes to mirror (nnU-Net's ``inference_allowed_mirroring_axes``).
        accumulate: see :func:`window_logits`.

    Returns:
        ``(K, *S)`` Gaussian-weighted logits (no softmax), float32, or float16 with the
        float16 accumulator (nnU-Net's dtype, exactly representable in float32).
    """
    return predict_ensemble_windows(
        image, [predict_batch], patch_size, max_batch, overlap, mirror_axes, accumulate
    )


def predict_ensemble_windows(
    image: np.ndarray,
    predict_batches: Sequence[PredictBatch],
    patch_size: Sequence[int],
    max_batch: int,
    overlap: float = 0.5,
    mirror_axes: Sequence[int] = (),
    accumulate: str = "float32",
) -> np.ndarray:
    """Mean of the folds' sliding-window logits, nnU-Net's
    ``predict_logits_from_preprocessed_data``.

    Args:
        image: as :func:`predict_windows`.
        predict_batches: one ``predict_batch`` per fold, run in order.
        accumulate: see :func:`window_logits`; with ``"float16"`` the folds are summed and
            divided in float16, as nnU-Net does.

    Returns:
        ``(K, *S)`` mean logits, in the accumulator's dtype (float32 or float16).
    """
    if not predict_batches:
        raise ConfigError("predict_ensemble_windows needs at least one fold")
    image = np.asarray(image)
    nd = len(patch_size)
    if image.ndim == nd + 1:  # one image: (C, *S) -> (1, C, *S)
        stack = image[None]
    elif nd == 2 and image.ndim == 4:  # nnU-Net 2d: slices (C, D, H, W) -> (D, C, H, W)
        stack = np.ascontiguousarray(np.moveaxis(image, 1, 0))
    else:
        raise ConfigError(
            f"predict_windows expects (C, *S) with {nd} spatial axes (or (C, D, H, W) for a 2D "
            f"patch), got shape {image.shape} for a patch of {tuple(patch_size)}"
        )
    dtype = np.float16 if accumulate == "float16" else np.float32
    total: np.ndarray | None = None
    for predict in predict_batches:
        logits = window_logits(
            stack, predict, patch_size, max_batch, overlap, mirror_axes, accumulate
        ).astype(dtype)  # exact: float16 accumulators hold float16 values
        if total is None:
            total = logits
        else:
            total += logits  # in float16: computed in float32 and rounded, as torch's half
    assert total is not None
    if len(predict_batches) > 1:
        total /= total.dtype.type(len(predict_batches))
    return total[0] if image.ndim == nd + 1 else np.ascontiguousarray(np.moveaxis(total, 0, 1))


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
    if len(patch_size) != 2:
        raise ConfigError(f"patch_size {tuple(patch_size)} must be two positive sizes")
    acc = window_logits(images, predict_batch, patch_size, max_batch, overlap, mirror_axes)
    if acc.shape[0] == 0:
        return acc
    acc -= acc.max(axis=1, keepdims=True)
    np.exp(acc, out=acc)
    acc /= acc.sum(axis=1, keepdims=True)
    return acc
