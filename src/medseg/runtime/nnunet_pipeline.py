"""Segmentation with an imported nnU-Net bundle (manifest ``preprocessing.kind = "nnunet"``).

:class:`NnunetSegmenter` is what :meth:`Segmenter.from_bundle
<medseg.runtime.segmenter.Segmenter.from_bundle>` returns for such a bundle. Per volume it runs
nnU-Net v2's inference exactly (see :mod:`medseg.data.nnunet_preprocess`): the reader's array
order, transpose, crop to non-zero, normalisation, resampling to the plan's spacing, the 2D or
3D sliding window (Gaussian, tile step 0.5, mirroring over the trainer's axes) for every fold,
the mean of the folds' logits (nnU-Net averages logits, not softmax), resampling back, softmax,
argmax and the inverse transforms. One backend per fold, loaded once. The timing records the
backend time of every fold.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medseg.bundle.folds import bundle_onnx_paths
from medseg.bundle.manifest import Manifest
from medseg.data.nifti import NiftiImage
from medseg.data.nnunet_preprocess import (
    logits_to_segmentation,
    nnunet_array,
    preprocess,
    to_file_order,
)
from medseg.data.nnunet_recipe import NnunetRecipe
from medseg.data.postprocess import apply_postprocess
from medseg.errors import ConfigError
from medseg.runtime.backends import OPENVINO_CACHE_DIR, Backend, onnx_file_backend
from medseg.runtime.segmenter import Segmentation, Segmenter, SegmentTiming, infer_padded
from medseg.runtime.sliding_window import (
    mirror_combinations,
    predict_ensemble_windows,
    window_starts,
)

__all__ = ["NNUNET_BACKENDS", "NnunetSegmenter", "NnunetTiming", "fold_backends"]

#: Backends that run an nnU-Net bundle here (per-fold TensorRT engines: not yet).
NNUNET_BACKENDS = ("onnxruntime", "openvino")

ProgressCallback = Callable[[int, int], None]


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


def fold_backends(
    bundle: Path,
    manifest: Manifest,
    backend: str,
    precision: str,
    providers: Sequence[str] | None = None,
    threads: int | None = None,
) -> dict[str, Backend]:
    """One (unloaded) backend per fold of ``precision`` (sha256-checked files).

    Args:
        backend: ``"auto"`` (ONNX Runtime), ``"onnxruntime"`` or ``"openvino"``.
    """
    if backend == "auto":
        backend = "onnxruntime"
    if backend not in NNUNET_BACKENDS:
        raise ConfigError(
            f"backend {backend!r} does not run nnU-Net bundles yet; accepted: "
            f"auto, {', '.join(NNUNET_BACKENDS)}"
        )
    if providers and backend != "onnxruntime":
        raise ConfigError("--providers sets ONNX Runtime; pass --backend onnxruntime")
    paths = bundle_onnx_paths(manifest, bundle, precision)
    cache = Path(bundle) / OPENVINO_CACHE_DIR
    return {
        fold: onnx_file_backend(
            backend,
            path,
            manifest,
            precision,
            providers,
            threads,
            cache / path.parent.name / path.stem,
        )
        for fold, path in paths.items()
    }


class NnunetSegmenter(Segmenter):
    """Segments volumes with the fold ensemble of an nnU-Net bundle.

    Args:
        backends: ``{fold: backend}`` in the manifest's fold order.
        manifest: the bundle's manifest (an :class:`NnunetRecipe`).
        precision: the precision the backends run (for reports).
        batch_size: windows per backend call; ``None``: the profile's maximum.
        tta: mirroring over the recipe's ``mirror_axes``; ``None``: as nnU-Net (on when the
            trainer records mirror axes).
        postprocess: apply the manifest's post-processing (imported bundles have none).
        accumulate: ``"float16"`` (default) or ``"float32"``; see
            :func:`~medseg.runtime.sliding_window.window_logits`.

    The defaults reproduce ``nnUNetPredictor``: its float16 accumulator (Gaussian weights,
    weighted sums, divisions and the fold mean rounded as nnU-Net rounds them; with nnU-Net's
    own PyTorch network this gives its logits bit for bit) and float16 logits into the
    resampling back. Near the image corners nnU-Net's summed float16 weights are subnormal and
    its logits there are rounding noise; ``accumulate="float32"`` is the accurate sum (it
    differs from nnU-Net there, up to 0.1 in softmax on the test cohort). Batching is kept
    (the profile's maximum): on ONNX Runtime CPU a window's outputs do not depend on the other
    windows of its batch (measured: probabilities identical at batch 1 and 4, 2d and
    3d_fullres), so ``batch_size=1`` (nnU-Net's one window per call) changes nothing there.
    """

    def __init__(
        self,
        backends: dict[str, Backend],
        manifest: Manifest,
        precision: str = "fp32",
        batch_size: int | None = None,
        tta: bool | None = None,
        postprocess: bool = True,
        accumulate: str = "float16",
    ) -> None:
        recipe = manifest.preprocessing
        if not isinstance(recipe, NnunetRecipe):
            raise ConfigError("NnunetSegmenter needs a bundle with nnU-Net preprocessing")
        if not backends:
            raise ConfigError("an nnU-Net bundle needs at least one fold backend")
        if tta and not recipe.mirror_axes:
            raise ConfigError("--tta: this nnU-Net model records no mirroring axes")
        batch = manifest.input.batch
        size = batch.max if batch_size is None else batch_size
        if not batch.contains(size):
            raise ConfigError(
                f"batch size {size} is outside the model's batch range {batch} (min:opt:max)"
            )
        if accumulate not in ("float32", "float16"):
            raise ConfigError(f"accumulate {accumulate!r} must be 'float32' or 'float16'")
        self.backends = dict(backends)
        self.backend = next(iter(self.backends.values()))
        self.manifest = manifest
        self.recipe = recipe
        self.precision = precision
        self.batch_size = size
        self.tta = bool(recipe.mirror_axes) if tta is None else tta
        self.postprocess = postprocess
        self.accumulate = accumulate

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """The patch axes flipped at inference (empty without TTA)."""
        return self.recipe.mirror_axes if self.tta else ()

    def segment(
        self,
        image: np.ndarray,
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
        source: str = "input",
        affine: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
    ) -> Segmentation:
        """Segment one volume as ``nnUNetPredictor`` does.

        Args:
            image: ``(C, X, Y, Z)`` (or ``(X, Y, Z)``) raw intensities, nibabel's voxel order.
            probabilities: also return ``(K, X, Y, Z)`` softmax probabilities.
            progress: called with ``(windows done, total windows)`` over all folds.
            source: the input's name for messages.
            affine: ``(4, 4)`` voxel-to-world; needed by the ``NibabelIOWithReorient`` reader.
            spacing: voxel sizes in mm along ``(X, Y, Z)``; ``None``: the affine's column norms.

        Returns:
            labels ``(X, Y, Z)`` uint8 on the input's grid (and probabilities).
        """
        self.load()
        t0 = time.perf_counter()
        volume = self.check_volume(image, source)
        if spacing is None and affine is not None:
            spacing = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
        if spacing is None or len(spacing) != 3:
            raise ConfigError(
                f"{source}: nnU-Net models need the voxel spacing (3 values in mm) or the affine"
            )
        reader = self.recipe.image_reader
        if reader == "NibabelIOWithReorient" and affine is None:
            raise ConfigError(f"{source}: this model's reader reorients to RAS; give the affine")
        aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
        spc = (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        channels = [NiftiImage(volume[c], aff, spc, None) for c in range(volume.shape[0])]
        array, case_spacing = nnunet_array(channels, reader)
        data, props = preprocess(array, case_spacing, self.recipe)
        t1 = time.perf_counter()
        logits, per_fold, windows, calls = self._ensemble(data, progress)
        t2 = time.perf_counter()
        labels_zyx, probs_zyx = logits_to_segmentation(logits, props, self.recipe)
        labels = to_file_order(labels_zyx, channels[0], reader)
        probs = None
        if probabilities:
            probs = np.stack([to_file_order(p, channels[0], reader) for p in probs_zyx])
        post = self.manifest.postprocess
        if self.postprocess and post is not None and post.active:
            labels = apply_postprocess(labels, post, self.manifest.classes, spc)
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
        return Segmentation(labels.astype(np.uint8, copy=False), probs, windows, timing, None)

    def _ensemble(
        self, data: np.ndarray, progress: ProgressCallback | None
    ) -> tuple[np.ndarray, dict[str, float], int, int]:
        """Mean fold logits ``(K, *S)`` (float16 with the float16 accumulator, as nnU-Net hands
        them to its export), seconds per fold, windows per fold, backend calls."""
        recipe = self.recipe
        patch = recipe.patch_size
        spatial = data.shape[1:] if recipe.ndim == 3 else data.shape[2:]
        windows = len(mirror_combinations(self.mirror_axes, recipe.ndim))
        for size, p in zip(spatial, patch, strict=True):
            windows *= len(window_starts(max(size, p), p, recipe.overlap))
        if recipe.ndim == 2:
            windows *= data.shape[1]  # every slice
        total = windows * len(self.backends)
        per_fold: dict[str, float] = {}
        done = {"windows": 0, "calls": 0}
        minimum = self.manifest.input.batch.min

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
            [fold_predict(fold, backend) for fold, backend in self.backends.items()],
            patch,
            self.batch_size,
            recipe.overlap,
            self.mirror_axes,
            self.accumulate,
        )
        return logits, per_fold, windows, done["calls"]

    def runners(self) -> tuple[Backend, ...]:
        """The fold backends, in the manifest's fold order."""
        return tuple(self.backends.values())
