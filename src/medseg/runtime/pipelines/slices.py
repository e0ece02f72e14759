"""Whole slices: the pipeline of ``pad`` and ``resize`` recipes (kind ``"slices"``).

Normalise the whole volume with the manifest's recipe, cut it into slices along the recipe's
axis, pad or resize them to network size, run them in batches within the model's batch range,
take the argmax, undo the padding/resizing and stack the slices back. The labels do not depend
on the batch size.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.errors import ConfigError, DatasetError
from medseg.runtime.backends import Backend, create_backend
from medseg.runtime.pipelines.base import (
    PipelineOutput,
    ProgressCallback,
    SegmentTiming,
    infer_padded,
    softmax,
)
from medseg.transforms.preprocessing import Geometry, bring_to_size, normalize_volume, restore_size

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest
    from medseg.runtime.segmenter import Segmenter

__all__ = ["SlicesPipeline", "one_model_backend", "predict_logits"]


def one_model_backend(
    bundle: Path,
    manifest: Manifest,
    backend: str,
    precision: str,
    *,
    providers: Sequence[str] | None,
    threads: int | None,
    cuda_graph: bool,
) -> dict[str, Backend]:
    """``{"model": backend}``: the bundle's one model (see :func:`create_backend`)."""
    from medseg.bundle.folds import SINGLE_MODEL

    runner = create_backend(
        bundle,
        manifest,
        backend,
        precision,
        providers=providers,
        threads=threads,
        cuda_graph=cuda_graph,
    )
    return {SINGLE_MODEL: runner}


def predict_logits(
    backend: Backend,
    slices: np.ndarray,
    batch_size: int,
    minimum: int,
    progress: ProgressCallback | None = None,
) -> tuple[np.ndarray, float, float, int]:
    """Run ``(N, C, H, W)`` slices in batches of ``batch_size``.

    Returns logits ``(N, K, H, W)``, backend seconds, network compute seconds, calls. The last
    partial batch is padded with empty slices when it is smaller than ``minimum`` (a
    static-batch engine); their outputs are dropped.
    """
    total = len(slices)
    outputs: list[np.ndarray] = []
    seconds = compute = 0.0
    calls = 0
    for start in range(0, total, batch_size):
        batch = slices[start : start + batch_size]
        logits, timing = infer_padded(backend, batch, minimum)
        seconds += timing.total_ms / 1e3
        compute += timing.compute_ms / 1e3
        calls += 1
        outputs.append(logits)
        if progress is not None:
            progress(min(start + len(batch), total), total)
    return np.concatenate(outputs), seconds, compute, calls


class SlicesPipeline:
    """Kind ``"slices"``: every slice whole through the network (``pad`` / ``resize``)."""

    kind = "slices"
    unit = "slices"
    reorients = True
    ensemble = False
    open_backends = staticmethod(one_model_backend)

    def default_batch_size(self, manifest: Manifest, backend_name: str) -> int:
        """The manifest's ``opt`` batch."""
        return manifest.input.batch.opt

    def resolve_tta(self, manifest: Manifest, tta: bool | None) -> bool:
        if tta:
            policy = manifest.medseg_recipe("the slice pipeline").size_policy
            raise ConfigError(
                "--tta needs a bundle with a sliding-window recipe (size_policy 'window'); "
                f"this one uses {policy!r}"
            )
        return False

    def slices(
        self, manifest: Manifest, volume: np.ndarray, source: str
    ) -> tuple[np.ndarray, Geometry]:
        """Checked ``(C, X, Y, Z)`` volume -> network-size slices ``(N, C, H, W)``, geometry.

        Raises:
            DatasetError: slices whose network size is outside the model's height/width range.
        """
        recipe = manifest.medseg_recipe("the slice pipeline")
        stack = np.moveaxis(normalize_volume(volume, recipe), recipe.slice_axis + 1, 0)
        n, c, h, w = stack.shape
        flat, _, geometry = bring_to_size(stack.reshape(n * c, h, w), recipe)
        slices = np.ascontiguousarray(flat.reshape(n, c, *geometry.padded), dtype=np.float32)
        spec = manifest.input
        ph, pw = geometry.padded
        if not (spec.height.contains(ph) and spec.width.contains(pw)):
            raise DatasetError(
                f"{source}: slices along axis {'xyz'[recipe.slice_axis]} are {h}x{w} voxels "
                f"({ph}x{pw} at network size); the model accepts height {spec.height} and "
                f"width {spec.width} (min:opt:max); re-export the bundle with --height/--width "
                "or --dynamic-hw to accept this size"
            )
        return slices, geometry

    def network_inputs(
        self,
        segmenter: Segmenter,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None,
        affine: np.ndarray | None,
        source: str,
    ) -> np.ndarray:
        """Every slice at network size ``(N, C, H, W)``."""
        return self.slices(segmenter.manifest, volume, source)[0]

    def run(
        self,
        segmenter: Segmenter,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None,
        affine: np.ndarray | None,
        probabilities: bool,
        progress: ProgressCallback | None,
        source: str,
        t0: float,
    ) -> PipelineOutput:
        manifest = segmenter.manifest
        slices, geometry = self.slices(manifest, volume, source)
        t1 = time.perf_counter()
        logits, inference_s, compute_s, calls = predict_logits(
            segmenter.backend, slices, segmenter.batch_size, manifest.input.batch.min, progress
        )
        t2 = time.perf_counter()
        axis = manifest.medseg_recipe("the slice pipeline").slice_axis
        labels = restore_size(logits.argmax(axis=1).astype(np.uint8), geometry, is_label=True)
        labels = np.moveaxis(labels, 0, axis)
        probs = None
        if probabilities:
            restored = restore_size(softmax(logits), geometry)  # (N, K, h, w)
            probs = np.moveaxis(restored, 0, axis + 1)
        timing = SegmentTiming(t1 - t0, inference_s, compute_s, time.perf_counter() - t2, calls)
        return PipelineOutput(labels, probs, len(slices), timing)
