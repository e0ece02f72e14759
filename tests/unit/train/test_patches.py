"""The patch sampler: foreground oversampling, padding of small slices, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ConfigError, DatasetError
from medseg.train.patches import PatchSampler, PatchSource


def _source(case: str, n: int, h: int, w: int, seed: int) -> PatchSource:
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, h, w), dtype=np.uint8)
    for i in range(n):
        y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
        labels[i, y : y + 3, x : x + 3] = 1 + i % 2  # a tiny object: rare foreground
    images = (labels[:, None] * 2.0 + rng.normal(0, 0.1, (n, 1, h, w))).astype(np.float32)
    return PatchSource(case, images, labels)


def test_foreground_fraction_is_what_was_asked() -> None:
    sources = [_source("a", 6, 120, 100, 0), _source("b", 4, 90, 130, 1)]
    sampler = PatchSampler(sources, (32, 32), foreground_fraction=1.0 / 3.0, seed=0)
    rng = np.random.default_rng(0)
    patches = [sampler.sample(rng) for _ in range(3000)]
    share = np.mean([p.foreground_centred for p in patches])
    assert share == pytest.approx(1.0 / 3.0, abs=0.03)
    for p in patches:
        assert p.image.shape == (1, 32, 32) and p.label.shape == (32, 32)
        if p.foreground_centred:
            assert p.label.any()  # centred on a foreground voxel: it is in the patch
    # random patches of a 120x100 slice rarely contain a 3x3 object
    random_fg = np.mean([p.label.any() for p in patches if not p.foreground_centred])
    assert random_fg < 0.3
    # both classes are chosen when centring on foreground
    centred = [p for p in patches if p.foreground_centred]
    assert {int(v) for p in centred for v in np.unique(p.label)} >= {1, 2}


def test_all_foreground_and_allowed_slices() -> None:
    src = _source("a", 8, 64, 64, 2)
    allowed = PatchSource("a", src.images, src.labels, np.array([1, 5]))
    sampler = PatchSampler([allowed], (32, 32), foreground_fraction=1.0, seed=0)
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = sampler.sample(rng)
        assert p.foreground_centred and p.label.any() and p.slice_index in (1, 5)
    assert sampler.num_slices == 2


def test_slices_smaller_than_the_patch_are_padded() -> None:
    src = _source("small", 3, 20, 24, 3)
    sampler = PatchSampler([src], (32, 64), foreground_fraction=0.5, seed=0)
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = sampler.sample(rng)
        assert p.image.shape == (1, 32, 64) and p.label.shape == (32, 64)
        filled = np.abs(p.image[0]) > 0
        assert filled.sum() == 20 * 24  # the whole slice is inside, the rest is zero padding
        rows, cols = np.nonzero(filled)
        assert rows.max() - rows.min() == 19 and cols.max() - cols.min() == 23
        assert p.label.sum() == src.labels[p.slice_index].sum()


def test_same_generator_same_patches_and_bad_input() -> None:
    sampler = PatchSampler([_source("a", 4, 50, 50, 4)], (32, 32), seed=0)
    a = [sampler.sample(np.random.default_rng([0, 1, i])) for i in range(10)]
    b = [sampler.sample(np.random.default_rng([0, 1, i])) for i in range(10)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.image, y.image)
    with pytest.raises(ConfigError, match="foreground fraction"):
        PatchSampler([_source("a", 2, 40, 40, 0)], (32, 32), foreground_fraction=1.5)
    with pytest.raises(DatasetError, match="no training slices"):
        PatchSampler([], (32, 32))
