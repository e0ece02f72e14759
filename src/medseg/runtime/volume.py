"""Sliding-window segmentation of a whole volume, streamed slice block by slice block.

The ``"window"`` recipe's path (nnU-Net's 2D inference), in the order training prepares
its cases: resample in-plane to the recipe's target spacing (cubic, slice by slice), normalise
the whole resampled volume (the statistics are per volume); then for each block of slices
along the slice axis: run the sliding window
(:func:`~medseg.runtime.sliding_window.predict_slices`), resample the probabilities back to
the scan's own in-plane grid (linear) and take the argmax. Only one block of windows and
probabilities is ever in memory, so a 512x512x300 CT needs its volume, its resampled and
normalised copy and its label map, not ``(N, K, H, W)`` for every slice.

Blocks hold whole numbers of backend batches where possible (the smallest number of slices
whose windows fill batches exactly, within a memory budget), so few calls are partial; the
labels do not depend on the block size or the batch size (each slice's windows are blended
in the same order whatever the batching).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.errors import ConfigError
from medseg.runtime.sliding_window import (
    PredictBatch,
    mirror_combinations,
    predict_slices,
    window_starts,
)
from medseg.transforms.preprocessing import Recipe, normalize_volume
from medseg.transforms.resample import inplane_axes, resampled_shape, resize_slice

__all__ = ["BLOCK_BUDGET_BYTES", "WindowedVolume", "segment_windowed"]

#: Most bytes the probabilities of one block of slices may take (network and scan grids).
BLOCK_BUDGET_BYTES = 256 * 1024 * 1024

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class WindowedVolume:
    """The outcome of :func:`segment_windowed`.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 on the input grid.
        probabilities: ``(K, X, Y, Z)`` float32 on the input grid, or ``None``.
        num_slices: slices along the slice axis.
        network_shape: ``(X', Y', Z')``: the volume at the target spacing.
        resample_s: seconds spent normalising and resampling in and out (argmax included).
        window_s: seconds in the sliding window outside ``predict_batch`` (gathering windows,
            Gaussian blending, softmax).
        predict_s: seconds inside ``predict_batch``.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    num_slices: int
    network_shape: tuple[int, int, int]
    resample_s: float
    window_s: float
    predict_s: float


def _block_slices(windows_per_slice: int, max_batch: int, bytes_per_slice: int, total: int) -> int:
    """Slices per block: whole batches of windows where the memory budget allows."""
    exact = math.lcm(windows_per_slice, max_batch) // windows_per_slice
    budget = max(1, BLOCK_BUDGET_BYTES // max(bytes_per_slice, 1))
    if exact <= budget:
        return min(total, exact * max(1, budget // exact))
    return min(total, budget)


def _argmax_classes(prob: np.ndarray) -> np.ndarray:
    """``argmax`` over axis 1 of ``(n, K, H, W)`` as uint8 (first maximum on ties, like
    :func:`numpy.argmax`), class plane by class plane: contiguous reads, not strided ones."""
    best = prob[:, 0].copy()
    out = np.zeros(best.shape, dtype=np.uint8)
    for k in range(1, prob.shape[1]):
        better = prob[:, k] > best
        out[better] = k
        np.maximum(best, prob[:, k], out=best)
    return out


def _resampled_normalised(
    volume: np.ndarray, recipe: Recipe, axis: int, net_shape: tuple[int, int, int]
) -> np.ndarray:
    """``(N, C, A', B')``: slices resampled in-plane (cubic), then normalised over the whole
    resampled volume: the order training prepares cases in (reorient, resample, normalise)."""
    a, b = inplane_axes(axis)
    moved = np.moveaxis(volume, axis + 1, 0)  # (N, C, A, B) view
    if (moved.shape[2], moved.shape[3]) == (net_shape[a], net_shape[b]):
        resampled = moved.astype(np.float32)
    else:
        resampled = np.empty((*moved.shape[:2], net_shape[a], net_shape[b]), dtype=np.float32)
        for start in range(0, moved.shape[0], 16):
            stop = min(start + 16, moved.shape[0])
            resampled[start:stop] = resize_slice(moved[start:stop], resampled.shape[2:], order=3)
    # normalize_volume wants (C, X, Y, Z); statistics are per channel over the whole volume
    as_volume = np.moveaxis(resampled, 0, axis + 1)
    return np.moveaxis(normalize_volume(as_volume, recipe), axis + 1, 0)


def segment_windowed(
    volume: np.ndarray,
    spacing: Sequence[float] | None,
    recipe: Recipe,
    predict_batch: PredictBatch,
    max_batch: int,
    num_classes: int,
    tta: bool = False,
    probabilities: bool = False,
    progress: ProgressCallback | None = None,
    slices: Sequence[int] | None = None,
) -> WindowedVolume:
    """Segment a ``(C, X, Y, Z)`` volume (in training orientation) with a ``"window"`` recipe.

    Args:
        volume: raw intensities ``(C, X, Y, Z)``, already in the training voxel order.
        spacing: voxel sizes ``(sx, sy, sz)`` in mm in that order; may be ``None`` only
            when the recipe has no ``target_spacing``.
        recipe: the bundle's recipe (``size_policy="window"``).
        predict_batch: ``(B, C, h, w)`` -> ``(B, K, h, w)`` logits, ``B <= max_batch``.
        max_batch: windows per call.
        num_classes: ``K``.
        tta: mirror along the recipe's ``mirror_axes`` and average.
        probabilities: also return ``(K, X, Y, Z)`` probabilities on the input grid.
        progress: called with ``(slices done, total slices)`` after every batch of windows
            (the network's calls; a caller may raise in it to stop) and after every block.
        slices: run only these slice indices along the recipe's slice axis (validation of a
            slice-level split); the others stay label 0 (probabilities 0). The volume is
            still normalised as a whole, so the slices run get exactly the labels of a full
            run. ``None``: every slice.
    """
    if recipe.pipeline_kind != "window" or recipe.patch_size is None:
        raise ConfigError("segment_windowed needs a recipe with size_policy 'window'")
    if volume.ndim != 4:
        raise ConfigError(f"segment_windowed expects (C, X, Y, Z), got shape {volume.shape}")
    axis = recipe.slice_axis
    grid = (int(volume.shape[1]), int(volume.shape[2]), int(volume.shape[3]))
    if recipe.target_spacing is None:
        net_shape = grid
    else:
        if spacing is None:
            raise ConfigError(
                "this bundle resamples to a target spacing: pass the scan's affine or spacing"
            )
        net_shape = resampled_shape(grid, spacing, recipe.target_spacing, axis)
    a, b = inplane_axes(axis)
    in_hw, net_hw = (grid[a], grid[b]), (net_shape[a], net_shape[b])
    patch = recipe.patch_size
    mirror = recipe.mirror_axes if tta else ()
    t0 = time.perf_counter()
    stack = _resampled_normalised(volume, recipe, axis, net_shape)  # (N, C, A', B')
    total = stack.shape[0]
    labels = np.zeros(grid, dtype=np.uint8)
    label_stack = np.moveaxis(labels, axis, 0)  # (N, A, B) view
    probs = np.zeros((num_classes, *grid), dtype=np.float32) if probabilities else None
    prob_stack = None if probs is None else np.moveaxis(probs, axis + 1, 0)  # (N, K, A, B)
    padded = (max(net_hw[0], patch[0]), max(net_hw[1], patch[1]))
    per_slice = len(window_starts(padded[0], patch[0], recipe.overlap)) * len(
        window_starts(padded[1], patch[1], recipe.overlap)
    )
    per_slice *= len(mirror_combinations(mirror))
    bytes_per_slice = 4 * num_classes * (padded[0] * padded[1] * 2 + in_hw[0] * in_hw[1])
    block = _block_slices(per_slice, max_batch, bytes_per_slice, max(total, 1))
    resample_s = time.perf_counter() - t0
    window_s = predict_s = 0.0

    block_start = windows_done = 0  # progress inside a block: after every batch of windows

    def timed(batch: np.ndarray) -> np.ndarray:
        nonlocal predict_s, windows_done
        start = time.perf_counter()
        out = predict_batch(batch)
        predict_s += time.perf_counter() - start
        if progress is not None:
            # whole slices whose windows have all run (a canceller sees every batch: a block
            # holds up to ~100 slices, tens of seconds on CPU)
            windows_done += len(batch)
            progress(block_start + windows_done // per_slice, len(indices))
        return out

    if slices is None:
        indices = np.arange(total)
    else:
        indices = np.unique(np.asarray(slices, dtype=np.int64))
        if indices.size and (indices[0] < 0 or indices[-1] >= total):
            raise ConfigError(f"slices must be in [0, {total}), got {indices[0]}..{indices[-1]}")
    for s0 in range(0, len(indices), block):
        s1 = min(s0 + block, len(indices))
        at = indices[s0:s1] if slices is not None else slice(s0, s1)
        block_start, windows_done = s0, 0
        t = time.perf_counter()
        net_in = stack[at]  # (n, C, A', B')
        t_window = time.perf_counter()
        before = predict_s
        net_prob = predict_slices(net_in, timed, patch, max_batch, recipe.overlap, mirror)
        t_back = time.perf_counter()
        window_s += (t_back - t_window) - (predict_s - before)
        back = resize_slice(net_prob, in_hw, order=1)  # (n, K, A, B)
        label_stack[at] = _argmax_classes(back)
        if prob_stack is not None:
            prob_stack[at] = back
        resample_s += (t_window - t) + (time.perf_counter() - t_back)
        if progress is not None:
            progress(s1, len(indices))
    return WindowedVolume(labels, probs, total, net_shape, resample_s, window_s, predict_s)
