"""nnU-Net v2's inference: the pipeline of imported nnU-Net bundles (kind ``"nnunet"``).

Per volume it runs ``nnUNetPredictor`` exactly (see :mod:`medseg.transforms.nnunet_preprocess`): the
reader's array order, transpose, crop to non-zero, normalisation, resampling to the plan's
spacing, the 2D or 3D sliding window (Gaussian, tile step 0.5, mirroring over the trainer's
axes) for every fold, the mean of the folds' logits (nnU-Net averages logits, not softmax),
resampling back, softmax, argmax and the inverse transforms. One backend per fold, loaded
once; the timing records the backend time of every fold (:class:`NnunetTiming`).

The defaults reproduce ``nnUNetPredictor``: its float16 accumulator (Gaussian weights, weighted
sums, divisions and the fold mean rounded as nnU-Net rounds them; with nnU-Net's own PyTorch
network this gives its logits bit for bit) and float16 logits into the resampling back. Near
the image corners nnU-Net's summed float16 weights are subnormal and its logits there are
rounding noise; ``NnunetPipeline(accumulate="float32")`` is the accurate sum (it differs from
nnU-Net there, up to 0.1 in softmax on the test cohort). Batching is kept (the profile's
maximum): on ONNX Runtime CPU a window's outputs do not depend on the other windows of its
batch (measured: probabilities identical at batch 1 and 4, 2d and 3d_fullres).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medseg.data.nifti import NiftiImage
from medseg.errors import ConfigError
from medseg.runtime.backends import Backend
from medseg.runtime.pipelines.base import (
    PipelineOutput,
    ProgressCallback,
    SegmentTiming,
    infer_padded,
)
from medseg.runtime.pipelines.nnunet_folds import NNUNET_BACKENDS, fold_backends
from medseg.runtime.sliding_window import (
    mirror_combinations,
    pad_to_patch,
    predict_ensemble_windows,
    window_starts,
)
from medseg.transforms.nnunet_preprocess import (
    CaseProperties,
    logits_to_segmentation,
    nnunet_array,
    preprocess,
    to_file_order,
)

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest
    from medseg.runtime.segmenter import Segmenter
    from medseg.transforms.nnunet_recipe import NnunetRecipe

__all__ = [
    "MAX_TIMING_WINDOWS",
    "NNUNET_BACKENDS",
    "NnunetPipeline",
    "NnunetTiming",
    "fold_backends",
    "window_inputs",
]

#: Windows :func:`window_inputs` returns at most (a 3D patch of 128**3 is 8 MB a channel).
MAX_TIMING_WINDOWS = 64


@dataclass(frozen=True)
class NnunetTiming(SegmentTiming):
    """:class:`SegmentTiming` plus the backend seconds of each fold.

    Attributes:
        fold_inference_s: ``{fold: seconds}`` of backend calls (their sum is
            ``inference_s``).
        windows: sliding-window positions per fold (times mirror flips).
    """

    fold_inference_s: dict[str, float] = field(default_factory=dict)
    windows: int = 0


def _recipe(manifest: Manifest) -> NnunetRecipe:
    return manifest.nnunet_recipe("the nnU-Net pipeline")


def preprocessed(
    recipe: NnunetRecipe,
    volume: np.ndarray,
    spacing: Sequence[float] | None,
    affine: np.ndarray | None,
    source: str,
) -> tuple[np.ndarray, CaseProperties, list[NiftiImage]]:
    """nnU-Net's preprocessing of a checked ``(C, X, Y, Z)`` volume: ``(data, properties,
    channel images)``; ``data`` is ``(C, *S)`` in nnU-Net's transposed axis order."""
    if spacing is None:
        raise ConfigError(
            f"{source}: nnU-Net models need the voxel spacing (3 values in mm) or the affine"
        )
    reader = recipe.image_reader
    if reader == "NibabelIOWithReorient" and affine is None:
        raise ConfigError(f"{source}: this model's reader reorients to RAS; give the affine")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    spc = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
    channels = [NiftiImage(volume[c], aff, spc, None) for c in range(volume.shape[0])]
    array, case_spacing = nnunet_array(channels, reader)
    data, props = preprocess(array, case_spacing, recipe)
    return data, props, channels


def window_inputs(
    data: np.ndarray, recipe: NnunetRecipe, limit: int = MAX_TIMING_WINDOWS
) -> np.ndarray:
    """The network inputs the sliding window feeds for a preprocessed case, without flips.

    Args:
        data: ``(C, *S)`` from :func:`preprocessed` (2d: ``S = (slices, y, x)``).
        recipe: the bundle's recipe (patch, overlap).
        limit: at most this many windows, from the middle of the window grid.

    Returns:
        ``(N, C, *patch)`` float32, ``N <= limit``.
    """
    patch = tuple(recipe.patch_size)
    stack = np.moveaxis(data, 1, 0) if recipe.ndim == 2 else data[None]  # (n, C, *patch axes)
    padded, _ = pad_to_patch(stack, patch)
    grid = [
        window_starts(s, p, recipe.overlap) for s, p in zip(padded.shape[2:], patch, strict=True)
    ]
    positions = [(i, *c) for i in range(len(padded)) for c in itertools.product(*grid)]
    first = max(len(positions) // 2 - limit // 2, 0)
    windows = [
        padded[i][(slice(None), *(slice(a, a + p) for a, p in zip(corner, patch, strict=True)))]
        for i, *corner in positions[first : first + limit]
    ]
    return np.ascontiguousarray(np.stack(windows), dtype=np.float32)


class NnunetPipeline:
    """Kind ``"nnunet"``: nnU-Net's preprocessing and fold-ensemble sliding window.

    Args:
        accumulate: ``"float16"`` (default, nnU-Net's) or ``"float32"``; see
            :func:`~medseg.runtime.sliding_window.window_logits`.
    """

    kind = "nnunet"
    unit = "windows"
    reorients = False
    ensemble = True

    def __init__(self, accumulate: str = "float16") -> None:
        if accumulate not in ("float32", "float16"):
            raise ConfigError(f"accumulate {accumulate!r} must be 'float32' or 'float16'")
        self.accumulate = accumulate

    def open_backends(
        self,
        bundle: Path,
        manifest: Manifest,
        backend: str,
        precision: str,
        *,
        providers: Sequence[str] | None,
        threads: int | None,
        cuda_graph: bool,
    ) -> dict[str, Backend]:
        """One backend per fold (:func:`fold_backends`)."""
        return fold_backends(
            bundle, manifest, backend, precision, providers, threads, cuda_graph=cuda_graph
        )

    def default_batch_size(self, manifest: Manifest, backend_name: str) -> int:
        """The profile's ``max``."""
        return manifest.input.batch.max

    def resolve_tta(self, manifest: Manifest, tta: bool | None) -> bool:
        """``None``: as nnU-Net (mirroring when the trainer records mirror axes)."""
        recipe = _recipe(manifest)
        if tta and not recipe.mirror_axes:
            raise ConfigError("--tta: this nnU-Net model records no mirroring axes")
        return bool(recipe.mirror_axes) if tta is None else tta

    def network_inputs(
        self,
        segmenter: Segmenter,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None,
        affine: np.ndarray | None,
        source: str,
    ) -> np.ndarray:
        """Windows of the preprocessed case at the sliding window's positions, in nnU-Net's
        axis order, at most :data:`MAX_TIMING_WINDOWS` from the middle of the grid:
        ``(N, C, *patch)``."""
        recipe = _recipe(segmenter.manifest)
        data = preprocessed(recipe, volume, spacing, affine, source)[0]
        return window_inputs(data, recipe)

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
        recipe = _recipe(segmenter.manifest)
        data, props, channels = preprocessed(recipe, volume, spacing, affine, source)
        reader = recipe.image_reader
        t1 = time.perf_counter()
        logits, per_fold, windows, calls = self._ensemble(segmenter, recipe, data, progress)
        t2 = time.perf_counter()
        labels_zyx, probs_zyx = logits_to_segmentation(logits, props, recipe)
        labels = to_file_order(labels_zyx, channels[0], reader)
        probs = None
        if probabilities:
            probs = np.stack([to_file_order(p, channels[0], reader) for p in probs_zyx])
        inference = float(sum(per_fold.values()))
        outside = max((t2 - t1) - inference, 0.0)
        timing = NnunetTiming(
            preprocess_s=t1 - t0,
            inference_s=inference,
            compute_s=inference,
            postprocess_s=(time.perf_counter() - t2) + outside,
            batches=calls,
            fold_inference_s=per_fold,
            windows=windows,
        )
        return PipelineOutput(labels.astype(np.uint8, copy=False), probs, windows, timing)

    def _ensemble(
        self,
        segmenter: Segmenter,
        recipe: NnunetRecipe,
        data: np.ndarray,
        progress: ProgressCallback | None,
    ) -> tuple[np.ndarray, dict[str, float], int, int]:
        """Mean fold logits ``(K, *S)`` (float16 with the float16 accumulator, as nnU-Net hands
        them to its export), seconds per fold, windows per fold, backend calls."""
        patch = recipe.patch_size
        mirror_axes = recipe.mirror_axes if segmenter.tta else ()
        spatial = data.shape[1:] if recipe.ndim == 3 else data.shape[2:]
        windows = len(mirror_combinations(mirror_axes, recipe.ndim))
        for size, p in zip(spatial, patch, strict=True):
            windows *= len(window_starts(max(size, p), p, recipe.overlap))
        if recipe.ndim == 2:
            windows *= data.shape[1]  # every slice
        total = windows * len(segmenter.backends)
        per_fold: dict[str, float] = {}
        done = {"windows": 0, "calls": 0}
        minimum = segmenter.manifest.input.batch.min

        def fold_predict(fold: str, backend: Backend) -> Callable[[np.ndarray], np.ndarray]:
            per_fold[fold] = 0.0

            def predict(batch: np.ndarray) -> np.ndarray:
                logits, timing = infer_padded(backend, batch, minimum)
                per_fold[fold] += timing.total_ms / 1e3
                done["windows"] += len(batch)
                done["calls"] += 1
                if progress is not None:
                    progress(done["windows"], total)
                return logits

            return predict

        logits = predict_ensemble_windows(
            data,
            [fold_predict(fold, backend) for fold, backend in segmenter.backends.items()],
            patch,
            segmenter.batch_size,
            recipe.overlap,
            mirror_axes,
            self.accumulate,
        )
        return logits, per_fold, windows, done["calls"]
