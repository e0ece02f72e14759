"""The registry of runtime pipelines: the recipe says its kind, the registry gives the pipeline."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from nnunet_bundle import plans_recipe, write_nnunet_bundle

from medseg.bundle import Manifest
from medseg.errors import ConfigError
from medseg.runtime import Segmenter
from medseg.runtime.pipelines import (
    PIPELINES,
    NnunetPipeline,
    SlicesPipeline,
    WindowPipeline,
    pipeline_for,
)
from medseg.runtime.pipelines.nnunet import fold_backends

DEMO = Path(__file__).resolve().parents[3] / "models" / "mni152-tissue" / "bundle"


def test_each_recipe_kind_has_its_pipeline(tmp_path: Path) -> None:
    window = Manifest.load(DEMO)
    recipe = dataclasses.replace(window.preprocessing, size_policy="pad", patch_size=None)
    slices = dataclasses.replace(window, preprocessing=recipe)
    nnunet = Manifest.load(write_nnunet_bundle(tmp_path / "b", plans_recipe("2d")))
    assert set(PIPELINES) == {"slices", "window", "nnunet"}
    for manifest, kind, cls in (
        (slices, "slices", SlicesPipeline),
        (window, "window", WindowPipeline),
        (nnunet, "nnunet", NnunetPipeline),
    ):
        assert manifest.preprocessing.pipeline_kind == kind
        assert isinstance(pipeline_for(manifest), cls) and pipeline_for(manifest).kind == kind
    assert pipeline_for(window).unit == "windows" and pipeline_for(slices).unit == "slices"
    assert not pipeline_for(nnunet).reorients and pipeline_for(nnunet).ensemble
    with pytest.raises(ConfigError, match="has no runtime pipeline; known"):
        pipeline_for(object())
    with pytest.raises(ConfigError, match="--tta needs a bundle with a sliding-window recipe"):
        pipeline_for(slices).resolve_tta(slices, True)
    assert pipeline_for(nnunet).resolve_tta(nnunet, None)  # nnU-Net mirrors by default
    with pytest.raises(ConfigError, match="accumulate 'float64' must be"):
        NnunetPipeline(accumulate="float64")


def test_a_one_model_kind_refuses_several_backends(tmp_path: Path) -> None:
    bundle = write_nnunet_bundle(tmp_path / "b", plans_recipe("2d"))
    manifest = Manifest.load(bundle)
    backends = fold_backends(bundle, manifest, "onnxruntime", "fp32", threads=1)
    window = Manifest.load(DEMO)
    with pytest.raises(ConfigError, match="a 'window' bundle runs one model, got backends"):
        Segmenter(backends, window)
    with pytest.raises(ConfigError, match="needs at least one backend"):
        Segmenter({}, manifest)
    segmenter = Segmenter(backends, manifest)
    assert segmenter.batch_size == manifest.input.batch.max and segmenter.tta
    assert segmenter.runners() == tuple(backends.values())
