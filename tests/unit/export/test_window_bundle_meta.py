"""The demo bundle's window recipe: a whole-slice run's record carried over to schema 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medseg.bundle.manifest import Manifest
from medseg.demo.window_bundle import DEMO_PATCH, window_meta
from medseg.errors import ConfigError
from medseg.transforms.preprocessing import Recipe

REPO = Path(__file__).resolve().parents[3]


def _meta() -> dict:
    config = json.loads((REPO / "models/mni152-tissue/config.json").read_text())
    return {"recipe": config["recipe"], "split": config["split"], "seed": 0}


def test_whole_slice_record_becomes_a_window_recipe_with_the_same_validation_slices() -> None:
    meta = _meta()
    out = window_meta(meta, mirror_axes=(0,))
    recipe = Recipe.from_dict(out["recipe"])
    old = Recipe.from_dict(meta["recipe"])
    assert recipe.size_policy == "window" and recipe.patch_size == DEMO_PATCH
    assert recipe.target_spacing == (1.0, 1.0) and recipe.mirror_axes == (0,)
    assert (recipe.modality, recipe.percentiles, recipe.slice_axis) == (
        old.modality,
        old.percentiles,
        old.slice_axis,
    )
    assert out["split"]["val"] == out["split"]["train"] == ["MNI152_001"]
    assert out["split"]["val_slices"] == meta["split"]["val_slices"]
    assert meta["recipe"]["size_policy"] == "pad"  # the input is not modified


def test_committed_bundle_is_the_window_export_of_the_committed_model() -> None:
    manifest = Manifest.load(REPO / "models/mni152-tissue/bundle")
    assert manifest.preprocessing == Recipe.from_dict(
        window_meta(_meta(), mirror_axes=(0,))["recipe"]
    )
    assert (manifest.input.height.max, manifest.input.width.max) == DEMO_PATCH
    ids = manifest.source["validation"]["slice_ids"]
    assert ids == _meta()["split"]["val_slices"]
    assert manifest.calibration is not None
    assert not set(manifest.calibration["slice_ids"]) & set(ids)  # never calibrated on val


def test_window_runs_and_multi_case_splits_are_refused() -> None:
    meta = _meta()
    with pytest.raises(ConfigError, match="already has a sliding-window recipe"):
        window_meta(window_meta(meta))
    two = {**meta, "split": {"kind": "case-level", "val_slices": []}}
    with pytest.raises(ConfigError, match="slice-level split of one case"):
        window_meta(two)
