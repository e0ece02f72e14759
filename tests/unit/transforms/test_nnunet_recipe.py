"""NnunetRecipe: read from nnU-Net plans, round-trips, and names every bad value."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from medseg.errors import ConfigError
from medseg.transforms.nnunet_recipe import NnunetNormalization, NnunetRecipe, NnunetResampling

DATASET = {"channel_names": {"0": "CT", "1": "T2"}, "labels": {"background": 0, "liver": 1}}


def _plans() -> dict[str, Any]:
    kw = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    full = {
        "patch_size": [64, 96, 80],
        "spacing": [2.5, 0.8, 0.8],
        "normalization_schemes": ["CTNormalization", "ZScoreNormalization"],
        "use_mask_for_norm": [False, True],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": kw,
        "resampling_fn_probabilities_kwargs": {**kw, "order": 1},
    }
    return {
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": [0, 2, 1],
        "transpose_backward": [0, 2, 1],
        "configurations": {
            "3d_fullres": full,
            "2d": {**full, "patch_size": [96, 80], "spacing": [0.8, 0.8]},
            "3d_lowres": {"inherits_from": "3d_fullres", "spacing": [4.0, 1.6, 1.6]},
            "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
        },
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 80.0, "std": 40.0, "percentile_00_5": -90.0, "percentile_99_5": 250.0}
        },
    }


def test_from_plans_reads_every_fact_and_round_trips() -> None:
    recipe = NnunetRecipe.from_plans(_plans(), DATASET, "3d_fullres", mirror_axes=(0, 1, 2))
    assert recipe.image_reader == "NibabelIOWithReorient"
    assert recipe.transpose_forward == (0, 2, 1) and recipe.patch_size == (64, 96, 80)
    assert recipe.normalization[0] == NnunetNormalization(
        "CTNormalization", False, -90, 250, 80, 40
    )
    assert recipe.normalization[1] == NnunetNormalization("ZScoreNormalization", True)
    assert recipe.resampling == NnunetResampling(3, 1, 0, None, 3.0)
    assert recipe.num_classes == 2 and recipe.overlap == 0.5 and recipe.ndim == 3
    assert NnunetRecipe.from_dict(recipe.to_dict()) == recipe
    lowres = NnunetRecipe.from_plans(_plans(), DATASET, "3d_lowres")
    assert lowres.spacing == (4.0, 1.6, 1.6) and lowres.patch_size == (64, 96, 80)
    flat = NnunetRecipe.from_plans(_plans(), DATASET, "2d", mirror_axes=(0, 1))
    assert flat.ndim == 2 and flat.spacing == (0.8, 0.8)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, d: ("3d_cascade_fullres", p, d), "cascades are not"),
        (lambda p, d: ("3d_highres", p, d), r"not in plans.json; it has: 2d, 3d_cascade"),
        (
            lambda p, d: ("2d", p, {**d, "labels": {"background": 0, "tumour": [1, 2]}}),
            "region-based labels",
        ),
        (lambda p, d: ("2d", p, {**d, "labels": {"background": 0, "x": 2}}), "consecutive"),
        (
            lambda p, d: (
                "2d",
                {**p, "image_reader_writer": "NaturalImage2DIO"},
                d,
            ),
            "image_reader 'NaturalImage2DIO' is not supported",
        ),
        (lambda p, d: ("2d", {**p, "transpose_backward": [0, 1, 2]}, d), "its inverse"),
    ],
)
def test_bad_plans_are_named(change: Any, message: str) -> None:
    config, plans, dataset = change(copy.deepcopy(_plans()), DATASET)
    with pytest.raises(ConfigError, match=message):
        NnunetRecipe.from_plans(plans, dataset, config)


def test_bad_values_are_named() -> None:
    good = NnunetRecipe.from_plans(_plans(), DATASET, "2d").to_dict()
    for key, value, message in [
        ("patch_size", [96, 80, 4], "patch_size .* must be a list of 2 ints"),
        ("mirror_axes", [2], r"mirror_axes \[2\] must be distinct patch axes among \[0, 1\]"),
        ("spacing", [0.8, -1.0], "must be > 0 mm"),
        ("num_input_channels", 3, r"one entry per input channel \(3\), got 2"),
        ("extra", 1, r"nnunet preprocessing: unknown key extra; accepted: configuration, "),
        ("patch_size", [96, "80"], r"patch_size\[1\] must be an integer, got str '80'"),
        ("tile_step_size", 2, r"tile_step_size must be in \(0, 1\], got 2"),
        ("labels", {"background": 0, "x": "1"}, "labels.x must be an integer"),
        ("resampling", {"order_z": 7}, r"resampling.order_z must be a spline order 0..5, got 7"),
        ("normalization", [{"scheme": "ZScoreNormalization", "x": 1}] * 2, r"normalization\[0\].x"),
    ]:
        with pytest.raises(ConfigError, match=message):
            NnunetRecipe.from_dict({**good, key: value})
    norm = dict(good["normalization"][0])
    with pytest.raises(ConfigError, match="CTNormalization mean None must be a finite number"):
        NnunetNormalization.from_dict({**norm, "mean": None})
    with pytest.raises(ConfigError, match="'Fancy' is not supported; supported: CTNorm"):
        NnunetNormalization.from_dict({"scheme": "Fancy"})
