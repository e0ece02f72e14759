"""Preprocessing recipes: normalisation, padding/resizing and their exact inverses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import ConfigError
from medseg.transforms.preprocessing import (
    Recipe,
    bring_to_size,
    clip_percentiles_zscore,
    normalize_volume,
    padded_size,
    resize_bilinear,
    resize_nearest,
    restore_size,
    window_ct,
)


def test_window_ct_clips_and_scales_to_unit_range() -> None:
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0])
    out = window_ct(hu, -1000.0, 400.0)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert out.dtype == np.float32


def test_zscore_over_foreground_has_zero_mean_unit_std_on_foreground() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40), dtype=np.float32)
    image[10:30, 10:30] = rng.normal(300.0, 50.0, (20, 20))
    fg = image > 0
    out = clip_percentiles_zscore(image, (0.5, 99.5), fg)
    assert abs(out[fg].mean()) < 1e-4
    assert abs(out[fg].std() - 1.0) < 1e-4
    # background is clipped to the foreground's 0.5th percentile, like nnU-Net does
    np.testing.assert_allclose(out[~fg], out[fg].min(), rtol=1e-6)
    assert out[~fg].max() < -2.0


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.float64])
@pytest.mark.parametrize("mask", ["foreground", "none", "empty"])
def test_zscore_is_its_definition_bit_for_bit_and_leaves_the_input_alone(
    dtype: type, mask: str
) -> None:
    """The one-pass implementation gives the textbook formula's float32 values exactly."""
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 100.0, (23, 31, 17)).astype(dtype)
    before = image.copy()
    fg = {"foreground": image > 150, "none": None, "empty": np.zeros(image.shape, bool)}[mask]
    out = clip_percentiles_zscore(image, (0.5, 99.5), fg)
    where = np.ones(image.shape, bool) if fg is None or not fg.any() else fg
    f32 = image.astype(np.float32)
    lo, hi = np.percentile(f32[where], (0.5, 99.5))
    clipped = np.clip(f32, lo, hi)
    mean, std = float(clipped[where].mean()), float(clipped[where].std())
    expected = ((clipped - mean) / std).astype(np.float32)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(image, before)


def test_percentile_clipping_removes_outliers() -> None:
    image = np.ones(1000, dtype=np.float32)
    image[:500] = 0.5
    image[0] = 1e6  # one hot voxel
    out = clip_percentiles_zscore(image, (0.5, 99.5))
    assert out.max() < 5.0


def test_normalize_volume_is_per_channel() -> None:
    rng = np.random.default_rng(1)
    vol = np.stack([rng.normal(10, 2, (8, 8, 8)), rng.normal(1000, 300, (8, 8, 8))])
    out = normalize_volume(vol.astype(np.float32), Recipe(modality="MR", foreground_threshold=-1e9))
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), [0.0, 0.0], atol=1e-4)


def test_ct_recipe_needs_window_and_ordered_bounds() -> None:
    with pytest.raises(ConfigError, match="ct_window"):
        Recipe(modality="CT")
    with pytest.raises(ConfigError, match="lo < hi"):
        Recipe(modality="CT", ct_window=(400.0, -1000.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"modality": "PET"},
        {"percentiles": (99.0, 1.0)},
        {"slice_axis": 3},
        {"size_policy": "crop"},
        {"size_policy": "resize", "target_size": (100, 128)},
        {"target_size": (128, 128)},
    ],
)
def test_bad_recipes_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Recipe(**kwargs)


def test_recipe_round_trips_through_json() -> None:
    recipe = Recipe(
        modality="CT",
        ct_window=(-1000.0, 400.0),
        slice_axis=1,
        size_policy="resize",
        target_size=(256, 256),
    )
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe


def test_recipe_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="preprocessing recipe: unknown key windowing"):
        Recipe.from_dict({"modality": "MR", "windowing": [0, 1]})


def test_padded_size_rounds_up_to_multiple_of_16() -> None:
    assert padded_size((197, 233)) == (208, 240)
    assert padded_size((16, 32)) == (16, 32)


def test_pad_is_centred_and_undone_exactly() -> None:
    rng = np.random.default_rng(2)
    image = rng.normal(size=(2, 197, 233)).astype(np.float32)
    label = rng.integers(0, 4, (197, 233)).astype(np.uint8)
    recipe = Recipe(modality="MR", size_policy="pad")
    padded, padded_label, geometry = bring_to_size(image, recipe, label)
    assert padded.shape == (2, 208, 240)
    assert padded_label is not None and padded_label.shape == (208, 240)
    assert geometry.pad_before == (5, 3)
    np.testing.assert_array_equal(restore_size(padded, geometry), image)
    np.testing.assert_array_equal(restore_size(padded_label, geometry, is_label=True), label)
    # network output with a class axis is cropped the same way
    probs = np.zeros((4, 208, 240), dtype=np.float32)
    assert restore_size(probs, geometry).shape == (4, 197, 233)


def test_resize_policy_reaches_target_and_returns_to_original_size() -> None:
    image = np.linspace(0, 1, 3 * 50 * 70, dtype=np.float32).reshape(3, 50, 70)
    label = (image[0] > 0.5).astype(np.uint8)
    recipe = Recipe(modality="none", size_policy="resize", target_size=(64, 96))
    out, out_label, geometry = bring_to_size(image, recipe, label)
    assert out.shape == (3, 64, 96) and out_label is not None and out_label.shape == (64, 96)
    back = restore_size(out, geometry)
    assert back.shape == image.shape
    np.testing.assert_allclose(back, image, atol=0.02)  # smooth ramp survives a round trip
    back_label = restore_size(out_label, geometry, is_label=True)
    assert (back_label == label).mean() > 0.98


def test_resize_bilinear_matches_torch_interpolate() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    image = rng.normal(size=(2, 13, 17)).astype(np.float32)
    for size in [(26, 34), (32, 48), (7, 9)]:
        ours = resize_bilinear(image, size)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(image)[None],
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=False,
        )[0].numpy()
        if size[0] > image.shape[1]:  # torch matches exactly when upsampling
            np.testing.assert_allclose(ours, ref, atol=1e-5)
        assert ours.shape == (2, *size)


def test_resize_nearest_keeps_label_values_and_dtype() -> None:
    labels = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    out = resize_nearest(labels, (4, 4))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, np.kron(labels, np.ones((2, 2), dtype=np.uint8)))


def test_restore_size_rejects_wrong_shape() -> None:
    _, _, geometry = bring_to_size(np.zeros((1, 20, 20), np.float32), Recipe())
    with pytest.raises(ConfigError, match="does not match"):
        restore_size(np.zeros((1, 16, 16)), geometry)


def test_window_recipe_round_trips_and_leaves_slices_to_the_sliding_window() -> None:
    recipe = Recipe(
        modality="CT",
        ct_window=(-100.0, 300.0),
        ct_zscore=(80.0, 50.0),
        size_policy="window",
        patch_size=(64, 96),
        target_spacing=(0.8, 1.25),
        mirror_axes=(0, 1),
        overlap=0.25,
    )
    again = Recipe.from_dict(json.loads(json.dumps(recipe.to_dict())))
    assert again == recipe
    image = np.arange(2 * 20 * 30, dtype=np.float32).reshape(2, 20, 30)
    out, _, geometry = bring_to_size(image, recipe)
    assert out.shape == image.shape and geometry.policy == "window"
    np.testing.assert_array_equal(restore_size(out, geometry), image)


def test_old_recipe_dicts_load_with_the_new_fields_defaulted() -> None:
    old = {
        "modality": "MR",
        "ct_window": None,
        "percentiles": [0.5, 99.5],
        "foreground_threshold": 0.0,
        "slice_axis": 2,
        "size_policy": "pad",
        "target_size": None,
    }
    recipe = Recipe.from_dict(old)
    assert recipe.size_policy == "pad" and recipe.target_spacing is None
    assert recipe.patch_size is None and recipe.mirror_axes == () and recipe.overlap == 0.5


def test_ct_zscore_normalises_after_clipping_to_the_window() -> None:
    recipe = Recipe(modality="CT", ct_window=(-100.0, 300.0), ct_zscore=(100.0, 50.0))
    vol = np.array([-1000.0, 0.0, 100.0, 2000.0], dtype=np.float32).reshape(1, 4, 1, 1)
    out = normalize_volume(vol, recipe)
    np.testing.assert_allclose(out.ravel(), [-4.0, -2.0, 0.0, 4.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size_policy": "window"}, "needs patch_size"),
        ({"size_policy": "window", "patch_size": (48, 64)}, "multiples of 32"),
        ({"patch_size": (64, 64)}, "only used with size_policy 'window'"),
        ({"target_spacing": (0.0, 1.0)}, "target_spacing"),
        ({"target_spacing": (float("nan"), 1.0)}, "target_spacing"),
        ({"target_spacing": (1.0, 60.0)}, "<= 50 mm"),
        ({"mirror_axes": (2,)}, "mirror_axes"),
        ({"mirror_axes": (0, 0)}, "mirror_axes"),
        ({"ct_zscore": (0.0, 1.0)}, "only used with modality 'CT'"),
        ({"modality": "CT", "ct_window": (0.0, 1.0), "ct_zscore": (0.0, 0.0)}, "std"),
        ({"overlap": 1.0}, "overlap"),
        ({"size_policy": "tile"}, "'pad', 'resize' or 'window'"),
    ],
)
def test_bad_window_fields_are_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Recipe(**kwargs)
