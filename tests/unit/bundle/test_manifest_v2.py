"""Manifest schema 2: window recipes need a static patch-sized input; plan and post-processing
round-trip; the pre-issue-12 schema-1 demo manifest still loads and is written back unchanged."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medseg.bundle.entries import SCHEMA_VERSION, DimRange, InputSpec
from medseg.bundle.manifest import Manifest
from medseg.errors import ConfigError
from medseg.transforms.postprocess import ClassRules, Postprocess
from medseg.transforms.preprocessing import Recipe

#: The manifest of the demo bundle as it was committed before issue 12 (schema 1, pad).
SCHEMA1_MANIFEST = Path(__file__).parents[2] / "data" / "schema1_demo_medseg.json"


def test_schema_one_demo_bundle_loads_and_round_trips(tmp_path: Path) -> None:
    raw = json.loads(SCHEMA1_MANIFEST.read_text())
    assert raw["schema_version"] == 1
    (tmp_path / "medseg.json").write_text(SCHEMA1_MANIFEST.read_text())
    manifest = Manifest.load(tmp_path)
    assert manifest.plan is None and manifest.postprocess is None
    assert manifest.preprocessing.size_policy == "pad"
    assert manifest.to_dict() == raw


def _window_manifest(demo_bundle: Path, height: DimRange, width: DimRange) -> Manifest:
    old = Manifest.load(demo_bundle)
    recipe = Recipe(
        modality="MR",
        slice_axis=2,
        size_policy="window",
        patch_size=(64, 96),
        target_spacing=(1.0, 1.0),
        mirror_axes=(0, 1),
    )
    spec = InputSpec("image", 1, DimRange(1, 8, 16), height, width)
    post = Postprocess({"WM": ClassRules(largest_component=True)}, {"cases": ["a"]})
    return replace(
        old,
        schema_version=SCHEMA_VERSION,
        preprocessing=recipe,
        input=spec,
        plan={"target_spacing": [1.0, 1.0], "patch_size": [64, 96]},
        postprocess=post,
    )


def test_schema_two_round_trips_plan_postprocess_and_window_recipe(
    demo_bundle: Path, tmp_path: Path
) -> None:
    manifest = _window_manifest(demo_bundle, DimRange(64, 64, 64), DimRange(96, 96, 96))
    manifest.save(tmp_path)
    again = Manifest.load(tmp_path)
    assert again == manifest
    assert json.loads((tmp_path / "medseg.json").read_text())["schema_version"] == 2


def test_window_recipe_refuses_a_dynamic_or_mismatched_input(demo_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="needs a static input"):
        _window_manifest(demo_bundle, DimRange(32, 64, 128), DimRange(96, 96, 96))
    with pytest.raises(ConfigError, match="patch_size 64x96"):
        _window_manifest(demo_bundle, DimRange(96, 96, 96), DimRange(64, 64, 64))


def test_unknown_schema_and_bad_postprocess_are_named(demo_bundle: Path) -> None:
    raw = json.loads((demo_bundle / "medseg.json").read_text())
    with pytest.raises(ConfigError, match="reads versions 1, 2, 3"):
        Manifest.from_dict({**raw, "schema_version": 4})
    with pytest.raises(ConfigError, match=r"postprocess\.classes has unknown classes"):
        Manifest.from_dict({**raw, "schema_version": 2, "postprocess": {"classes": {"x": {}}}})
    with pytest.raises(ConfigError, match="plan must be an object"):
        Manifest.from_dict({**raw, "schema_version": 2, "plan": [1, 2]})
