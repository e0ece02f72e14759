"""Sliding-window inference: Gaussian blending, batching, padding and mirroring."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medseg.errors import ConfigError
from medseg.runtime.sliding_window import (
    gaussian_importance,
    mirror_combinations,
    predict_slices,
    window_starts,
)

PATCH = (32, 64)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _pixelwise(batch: np.ndarray) -> np.ndarray:
    """A 1x1 'network': logits depend on each pixel's own channels only (shift-invariant)."""
    w = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.3]], dtype=np.float32)  # (K=3, C=2)
    return np.einsum("kc,bchw->bkhw", w, batch).astype(np.float32)


def _contextual(batch: np.ndarray) -> np.ndarray:
    """Logits that depend on the window's content and position (a blurred, shifted image)."""
    blurred = ndimage.uniform_filter(batch, size=(1, 1, 7, 7), mode="constant")
    ramp = np.linspace(-1.0, 1.0, batch.shape[-1], dtype=np.float32)
    k0 = blurred[:, 0] + ramp
    k1 = blurred[:, 1] - batch[:, 1].mean(axis=(1, 2), keepdims=True)
    k2 = np.flip(blurred[:, 0], axis=1) * 0.8
    return np.stack([k0, k1, k2], axis=1).astype(np.float32)


def _images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2, h, w)).astype(np.float32)


def test_gaussian_importance_is_peaked_positive_and_symmetric() -> None:
    g = gaussian_importance((64, 96))
    assert g.shape == (64, 96) and g.dtype == np.float32
    assert g.max() == pytest.approx(1.0) and g[32, 48] == pytest.approx(1.0)
    assert g.min() > 0
    np.testing.assert_allclose(g[32, 48 - 10], g[32, 48 + 10], rtol=1e-6)
    assert g[0, 0] < 1e-3  # corners weigh little: 4 sigma away on each axis


@pytest.mark.parametrize(
    ("size", "patch", "overlap"),
    [(64, 64, 0.5), (100, 64, 0.5), (300, 64, 0.5), (97, 32, 0.0), (257, 256, 0.25)],
)
def test_window_starts_cover_the_axis_with_the_overlap(
    size: int, patch: int, overlap: float
) -> None:
    starts = window_starts(size, patch, overlap)
    assert starts[0] == 0 and starts[-1] == size - patch
    steps = np.diff(starts)
    assert np.all(steps > 0) if len(starts) > 1 else True
    assert np.all(steps <= patch * (1 - overlap) + 0.5)


def test_window_starts_refuse_a_patch_larger_than_the_axis() -> None:
    with pytest.raises(ConfigError, match="pad the slice first"):
        window_starts(20, 32, 0.5)


def test_one_window_reproduces_a_single_full_image_pass() -> None:
    images = _images(3, *PATCH)
    out = predict_slices(images, _contextual, PATCH, max_batch=2)
    np.testing.assert_allclose(out, _softmax(_contextual(images)), rtol=1e-5, atol=1e-6)


def test_shift_invariant_network_gives_the_full_pass_on_any_size() -> None:
    images = _images(2, 75, 150, seed=1)  # several windows each way, uneven steps
    out = predict_slices(images, _pixelwise, PATCH, max_batch=4)
    np.testing.assert_allclose(out, _softmax(_pixelwise(images)), rtol=1e-5, atol=1e-6)


def test_slices_thinner_than_the_window_are_padded_not_refused() -> None:
    images = _images(2, 20, 100, seed=2)  # 20 < 32 rows
    out = predict_slices(images, _pixelwise, PATCH, max_batch=3)
    assert out.shape == (2, 3, 20, 100)
    np.testing.assert_allclose(out, _softmax(_pixelwise(images)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mirror_axes", [(), (0,), (0, 1)])
def test_labels_and_probabilities_do_not_depend_on_max_batch(mirror_axes: tuple[int, ...]) -> None:
    images = _images(3, 70, 90, seed=3)
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return _contextual(batch)

    ref = predict_slices(images, counted, PATCH, max_batch=1, mirror_axes=mirror_axes)
    for max_batch in (2, 5, 16, 64):
        calls.clear()
        out = predict_slices(images, counted, PATCH, max_batch=max_batch, mirror_axes=mirror_axes)
        assert max(calls) <= max_batch and len(calls) >= 1
        np.testing.assert_array_equal(out.argmax(axis=1), ref.argmax(axis=1))
        np.testing.assert_array_equal(out, ref)


def test_windows_of_several_slices_share_a_batch() -> None:
    images = _images(4, *PATCH)
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return _pixelwise(batch)

    predict_slices(images, counted, PATCH, max_batch=8)
    assert calls == [4]


def test_mirroring_averages_the_flipped_passes() -> None:
    images = _images(2, *PATCH, seed=4)
    out = predict_slices(images, _contextual, PATCH, max_batch=3, mirror_axes=(1,))
    plain = _contextual(images)
    flipped = np.flip(_contextual(np.flip(images, axis=3)), axis=3)
    np.testing.assert_allclose(out, _softmax((plain + flipped) / 2), rtol=1e-5, atol=1e-6)
    # and a flip-equivariant network is unchanged by it
    same = predict_slices(images, _pixelwise, PATCH, max_batch=3, mirror_axes=(0, 1))
    np.testing.assert_allclose(same, _softmax(_pixelwise(images)), rtol=1e-5, atol=1e-6)


def test_mirror_combinations_and_bad_axes() -> None:
    assert mirror_combinations((0, 1)) == [(), (0,), (1,), (0, 1)]
    with pytest.raises(ConfigError, match="mirror_axes"):
        mirror_combinations((2,))


def test_bad_predict_batch_output_is_named() -> None:
    with pytest.raises(ConfigError, match="predict_batch returned shape"):
        predict_slices(_images(1, *PATCH), lambda b: b[:, :, :8], PATCH, max_batch=2)
