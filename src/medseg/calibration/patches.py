"""Calibration and check patches of a fixed N-D patch size drawn from preprocessed volumes.

For networks that run on a sliding window of a static patch (nnU-Net 2d and 3d_fullres): the
samples are what one window of the runtime sees. Half the patches are centred on a random
foreground voxel (nnU-Net's own training sampler oversamples foreground the same way), half
on a random voxel; patches are kept inside the volume where it is large enough and zero-padded
where it is not (as nnU-Net's ``pad_nd_image`` pads the preprocessed image).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.errors import ConfigError, DatasetError

__all__ = ["draw_patches"]


def _crop(volume: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    out = np.zeros((volume.shape[0], *patch), dtype=np.float32)
    src, dst = [slice(None)], [slice(None)]
    for s, p, n in zip(start, patch, volume.shape[1:], strict=True):
        lo, hi = max(s, 0), min(s + p, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def draw_patches(
    volumes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray | None],
    patch_size: Sequence[int],
    count: int,
    seed: int = 0,
) -> np.ndarray:
    """Draw ``count`` patches, spread evenly over the volumes.

    Args:
        volumes: preprocessed images ``(C, z, y, x)`` float32 (one per case).
        labels: matching label maps ``(z, y, x)`` (``None``: no foreground centring).
        patch_size: 3 ints for 3D patches, or 2 for 2D patches (one slice along the first
            axis, as nnU-Net's 2d configuration).
        count: number of patches, >= 1.
        seed: the same seed gives the same patches.

    Returns:
        ``(count, C, *patch_size)`` float32.
    """
    if not volumes or len(volumes) != len(labels):
        raise DatasetError("no preprocessed cases to draw patches from")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"patch count {count!r} must be an integer >= 1")
    patch = [int(p) for p in patch_size]
    if len(patch) not in (2, 3) or min(patch) < 1:
        raise ConfigError(f"patch size {tuple(patch_size)} must be 2 or 3 positive sizes")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        k = i % len(volumes)
        volume, label = volumes[k], labels[k]
        if volume.ndim != 4:
            raise DatasetError(f"case {k}: volume shape {volume.shape} is not (C, z, y, x)")
        shape = volume.shape[1:]
        fg = np.argwhere(label > 0) if label is not None and i % 2 == 0 else np.empty((0, 3))
        pick = fg[rng.integers(len(fg))] if len(fg) else [rng.integers(n) for n in shape]
        centre = [int(c) for c in pick]
        if len(patch) == 2:  # one slice, a 2-D window on it
            z = int(centre[0])
            plane = volume[:, z]
            start = _starts(centre[1:], patch, plane.shape[1:])
            out.append(_crop(plane, start, patch))
        else:
            out.append(_crop(volume, _starts(centre, patch, shape), patch))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def _starts(centre: Sequence[int], patch: Sequence[int], shape: Sequence[int]) -> list[int]:
    starts = []
    for c, p, n in zip(centre, patch, shape, strict=True):
        s = int(c) - p // 2
        starts.append(min(max(s, 0), n - p) if n >= p else -((p - n) // 2))
    return starts
