"""In-plane resampling to the network spacing and back to the scan's grid."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.transforms.resample import (
    inplane_axes,
    resample_inplane,
    resample_labels_inplane,
    resampled_shape,
    resize_slice,
    resize_to_shape,
)


def _blob_labels(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], slice_axis: int
) -> np.ndarray:
    """Nested elliptic discs (classes 1..3) per slice, in physical mm, drifting slice to slice.

    So any in-plane grid sees the same anatomy. The smallest (class 3) is 0.3 of the field of
    view across: structures only a few voxels wide lose more than 1 % of their volume to any
    resampling there and back (their boundary voxels are a large share of them).
    """
    a, b = (ax for ax in range(3) if ax != slice_axis)
    ga, gb = np.meshgrid(
        (np.arange(shape[a]) + 0.5) * spacing[a],
        (np.arange(shape[b]) + 0.5) * spacing[b],
        indexing="ij",
    )
    ext_a, ext_b = shape[a] * spacing[a], shape[b] * spacing[b]
    slices = []
    for s in range(shape[slice_axis]):
        ca, cb = ext_a * (0.5 + 0.01 * s), ext_b * (0.5 - 0.005 * s)
        r = np.sqrt(((ga - ca) / (0.3 * ext_a)) ** 2 + ((gb - cb) / (0.35 * ext_b)) ** 2)
        sl = np.zeros(r.shape, dtype=np.uint8)
        sl[r < 1.0] = 1
        sl[r < 0.75] = 2
        sl[r < 0.5] = 3
        slices.append(sl)
    return np.stack(slices, axis=slice_axis)


def test_inplane_axes_are_the_two_other_axes_in_order() -> None:
    assert inplane_axes(0) == (1, 2)
    assert inplane_axes(1) == (0, 2)
    assert inplane_axes(2) == (0, 1)
    with pytest.raises(ConfigError, match="slice_axis 3"):
        inplane_axes(3)


def test_resampled_shape_follows_spacing_ratio_and_keeps_slice_axis() -> None:
    assert resampled_shape((512, 512, 300), (0.7, 0.7, 1.5), (1.0, 1.0), 2) == (358, 358, 300)
    assert resampled_shape((100, 40, 80), (2.0, 5.0, 0.5), (1.0, 1.0), 1) == (200, 40, 40)
    assert resampled_shape((3, 3, 3), (1.0, 1.0, 1.0), (40.0, 40.0), 0) == (3, 1, 1)


@pytest.mark.parametrize("bad", [(0.0, 1.0), (float("nan"), 1.0), (1.0, 51.0), (1.0,)])
def test_bad_target_spacing_is_a_config_error(bad: tuple[float, ...]) -> None:
    with pytest.raises(ConfigError, match="target_spacing"):
        resampled_shape((10, 10, 10), (1.0, 1.0, 1.0), bad, 2)


def test_bad_scan_spacing_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="spacing"):
        resample_inplane(np.zeros((1, 4, 4, 4)), (1.0, 0.0, 1.0), (1.0, 1.0), 2)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_resample_inplane_gives_the_planned_shape_and_leaves_slices_alone(slice_axis: int) -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(2, 20, 24, 16)).astype(np.float32)
    spacing = (0.8, 1.3, 2.5)
    out = resample_inplane(vol, spacing, (1.0, 1.0), slice_axis)
    assert out.dtype == np.float32
    assert out.shape[1:] == resampled_shape(vol.shape[1:], spacing, (1.0, 1.0), slice_axis)
    assert out.shape[slice_axis + 1] == vol.shape[slice_axis + 1]
    # slices are resampled independently: changing one slice changes only that slice
    vol2 = vol.copy()
    idx = [slice(None)] * 4
    idx[slice_axis + 1] = 3  # type: ignore[call-overload]
    vol2[tuple(idx)] = 0.0
    out2 = resample_inplane(vol2, spacing, (1.0, 1.0), slice_axis)
    changed = np.any(out != out2, axis=tuple(a for a in range(4) if a != slice_axis + 1))
    assert changed.tolist() == [i == 3 for i in range(vol.shape[slice_axis + 1])]


def test_resample_inplane_keeps_constant_and_linear_images() -> None:
    const = np.full((1, 12, 15, 3), 7.0, dtype=np.float32)
    np.testing.assert_allclose(
        resample_inplane(const, (1.0, 1.0, 3.0), (0.6, 1.7), 2), 7.0, rtol=1e-5
    )


def test_resize_slice_gives_exact_sizes() -> None:
    rng = np.random.default_rng(1)
    for size in [(7, 9), (33, 31), (64, 1)]:
        out = resize_slice(rng.random((3, 17, 23)), size, order=3)
        assert out.shape == (3, *size)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
@pytest.mark.parametrize("target", [(1.1, 1.2), (1.6, 0.7), (0.5, 0.6)])
def test_labels_there_and_back_keep_class_volumes_within_one_percent(
    slice_axis: int, target: tuple[float, float]
) -> None:
    spacing = [0.75, 0.9, 1.4]
    spacing[slice_axis] = 4.0
    dims = [96, 90]
    dims.insert(slice_axis, 20)
    shape = (dims[0], dims[1], dims[2])
    labels = _blob_labels(shape, tuple(spacing), slice_axis)  # type: ignore[arg-type]
    down = resample_labels_inplane(labels, spacing, target, slice_axis, num_classes=4)
    assert down.dtype == labels.dtype
    assert down.shape == resampled_shape(shape, spacing, target, slice_axis)
    back = resize_to_shape(down, shape)
    assert back.shape == shape and back.dtype == labels.dtype
    for k in (1, 2, 3):
        before, after = int((labels == k).sum()), int((back == k).sum())
        assert abs(after - before) / before < 0.01, (k, before, after)


def test_resize_to_shape_probabilities_exact_shape_and_still_sum_to_one() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 10, 12, 5)).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    out = resize_to_shape(prob, (17, 9, 5), order=1)
    assert out.shape == (3, 17, 9, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, rtol=1e-5)


def test_resize_to_shape_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="resize_to_shape"):
        resize_to_shape(np.zeros((4, 4)), (2, 2, 2))
    with pytest.raises(ConfigError, match="positive"):
        resize_to_shape(np.zeros((4, 4, 4)), (0, 2, 2))
