"""One runtime pipeline per recipe kind, behind one small protocol.

The recipe says its kind (``recipe.pipeline_kind``: ``"slices"``, ``"window"`` or
``"nnunet"``); :data:`PIPELINES` maps the kind to its :class:`Pipeline`, and
:func:`pipeline_for` is what the segmenter, CLI, bench and deployment ask. A new recipe kind
is one more module here and one more registry entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medseg.errors import ConfigError
from medseg.runtime.pipelines.base import (
    GPU_ENGINE_BACKENDS,
    Pipeline,
    PipelineOutput,
    Segmentation,
    SegmentTiming,
    infer_padded,
    softmax,
)
from medseg.runtime.pipelines.nnunet import NnunetPipeline, NnunetTiming
from medseg.runtime.pipelines.slices import SlicesPipeline
from medseg.runtime.pipelines.window import WindowPipeline

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest

__all__ = [
    "GPU_ENGINE_BACKENDS",
    "PIPELINES",
    "NnunetPipeline",
    "NnunetTiming",
    "Pipeline",
    "PipelineOutput",
    "SegmentTiming",
    "Segmentation",
    "SlicesPipeline",
    "WindowPipeline",
    "infer_padded",
    "pipeline_for",
    "softmax",
]

#: recipe kind -> its pipeline (stateless; :class:`NnunetPipeline` with its default options).
PIPELINES: dict[str, Pipeline] = {
    "slices": SlicesPipeline(),
    "window": WindowPipeline(),
    "nnunet": NnunetPipeline(),
}


def pipeline_for(target: Manifest | Any) -> Pipeline:
    """The pipeline of a manifest or a recipe (by its ``pipeline_kind``).

    Raises:
        ConfigError: a kind no pipeline runs.
    """
    recipe = getattr(target, "preprocessing", target)
    kind = getattr(recipe, "pipeline_kind", None)
    if kind not in PIPELINES:
        raise ConfigError(f"recipe kind {kind!r} has no runtime pipeline; known: {list(PIPELINES)}")
    return PIPELINES[kind]
