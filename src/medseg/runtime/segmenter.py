"""Volume segmentation with a bundle: the scanner-side pipeline in one object.

``Segmenter.from_bundle(bundle)`` reads ``medseg.json``, picks the pipeline of the recipe's
kind (:mod:`medseg.runtime.pipelines`: whole ``slices``, sliding ``window``, ``nnunet`` fold
ensembles), opens its backend(s), and :meth:`Segmenter.segment` turns a ``(C, X, Y, Z)``
volume into an ``(X, Y, Z)`` label map. The segmenter keeps the steps every kind shares: input
checks, the spacing from the affine, reorientation, the manifest's per-class post-processing
(``postprocess=False`` switches it off) and timing.

Given the volume's affine and a manifest that records the training orientation (e.g. RAS),
a volume in another voxel order (a standard axial DICOM series is LPS) is transposed and
flipped to the training order for the network, and the outputs are turned back, so they stay
on the input's grid.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from medseg.bundle.manifest import Manifest
from medseg.errors import ChannelMismatchError, ConfigError, DatasetError
from medseg.names import file_precision
from medseg.runtime.backends import BACKENDS, Backend
from medseg.runtime.pipelines import (
    GPU_ENGINE_BACKENDS,
    Pipeline,
    Segmentation,
    SegmentTiming,
    pipeline_for,
    softmax,
)
from medseg.runtime.pipelines.base import check_batch_range, infer_padded
from medseg.transforms.orientation import (
    axis_codes,
    from_orientation,
    reorient_plan,
    to_orientation,
)
from medseg.transforms.postprocess import apply_postprocess

__all__ = [
    "GPU_ENGINE_BACKENDS",
    "SegmentTiming",
    "Segmentation",
    "Segmenter",
    "default_batch_size",
    "infer_padded",
    "softmax",
]

ProgressCallback = Callable[[int, int], None]


def default_batch_size(manifest: Manifest, backend_name: str) -> int:
    """Windows (or slices) per backend call when the caller gives none: the pipeline's choice
    (:meth:`Pipeline.default_batch_size <medseg.runtime.pipelines.Pipeline.default_batch_size>`).

    Args:
        manifest: the bundle's manifest.
        backend_name: :attr:`Backend.name` of the backend that will run.
    """
    return pipeline_for(manifest).default_batch_size(manifest, backend_name)


class Segmenter:
    """Segments volumes with the backend(s) of one bundle.

    Args:
        backend: a (not necessarily loaded) :class:`~medseg.runtime.backends.Backend`, or
            ``{fold: backend}`` in the manifest's fold order for a fold ensemble.
        manifest: the bundle's manifest (recipe, classes, input ranges).
        precision: which of the bundle's precisions the backend runs (for reports).
        batch_size: slices (window recipes: windows) per backend call; ``None``: the
            pipeline's default (:func:`default_batch_size`).
        tta: mirroring test-time augmentation along the recipe's mirror axes (window and
            nnU-Net recipes; ``None``: off, except for nnU-Net bundles, which mirror as
            nnU-Net does unless ``False``).
        postprocess: apply the manifest's per-class post-processing (when it has any).
        pipeline: the pipeline to run; ``None``: the one of the recipe's kind.
    """

    def __init__(
        self,
        backend: Backend | Mapping[str, Backend],
        manifest: Manifest,
        precision: str = "fp32",
        batch_size: int | None = None,
        tta: bool | None = None,
        postprocess: bool = True,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.pipeline = pipeline or pipeline_for(manifest)
        backends = {"model": backend} if isinstance(backend, Backend) else dict(backend)
        if not backends:
            raise ConfigError("a segmenter needs at least one backend (one per fold)")
        if len(backends) > 1 and not self.pipeline.ensemble:
            raise ConfigError(
                f"a {self.pipeline.kind!r} bundle runs one model, got backends {list(backends)}"
            )
        self.backends = backends
        self.backend = next(iter(backends.values()))
        self.tta = self.pipeline.resolve_tta(manifest, tta)
        size = (
            self.pipeline.default_batch_size(manifest, self.backend.name)
            if batch_size is None
            else batch_size
        )
        self.batch_size = check_batch_range(manifest, size)
        if manifest.num_classes > 255:
            raise ConfigError(f"{manifest.num_classes} classes do not fit uint8 label maps")
        self.manifest = manifest
        self.precision = precision
        self.postprocess = postprocess

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path,
        backend: str = "auto",
        precision: str = "fp32",
        *,
        batch_size: int | None = None,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        cuda_graph: bool = False,
        tta: bool | None = None,
        postprocess: bool = True,
        pipeline: Pipeline | None = None,
    ) -> Segmenter:
        """Open a bundle with a backend (one per fold for an nnU-Net fold ensemble).

        Args:
            bundle: the bundle folder (``medseg.json`` + ONNX files + ``engines/``).
            backend: ``"auto"`` (TensorRT when this machine has TensorRT, a GPU and an engine
                built here for ``precision``; else OpenVINO on a machine without an NVIDIA GPU
                when installed, else ONNX Runtime), ``"tensorrt"``, ``"onnxruntime"`` or
                ``"openvino"``.
            precision: ``"fp32"``, ``"fp16"`` or ``"int8"``; must be in the bundle; or
                ``"bf16"`` (OpenVINO: the FP32 file with BF16 arithmetic).
            batch_size: slices per call (within the manifest's range).
            providers: ONNX Runtime providers (``"cuda"``, ``"cpu"``, ``"tensorrt"``).
            threads: CPU threads (ONNX Runtime intra-op, OpenVINO inference threads).
            cuda_graph: TensorRT: replay a captured CUDA graph for full batches.
            tta: mirroring test-time augmentation (window recipes; ``None``: off, except for
                nnU-Net bundles, which mirror as nnU-Net does unless ``False``).
            postprocess: apply the manifest's post-processing rules.
            pipeline: the pipeline to run (e.g. ``NnunetPipeline(accumulate="float32")``);
                ``None``: the one of the recipe's kind.

        Raises:
            ConfigError / EngineBuildError: no such precision, a file whose sha256 does not
                match the manifest, an engine built for another GPU or TensorRT version.
        """
        bundle = Path(bundle)
        manifest = Manifest.load(bundle)
        if file_precision(precision) not in manifest.precisions:
            raise ConfigError(
                f"bundle {bundle} has no {precision} model; it has {sorted(manifest.precisions)}"
            )
        if backend not in ("auto", *BACKENDS):
            raise ConfigError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKENDS)}")
        pipeline = pipeline or pipeline_for(manifest)
        runners = pipeline.open_backends(
            bundle,
            manifest,
            backend,
            precision,
            providers=providers,
            threads=threads,
            cuda_graph=cuda_graph,
        )
        return cls(runners, manifest, precision, batch_size, tta, postprocess, pipeline)

    # -- the pipeline -----------------------------------------------------------------------
    def check_volume(self, image: np.ndarray, source: str = "input") -> np.ndarray:
        """Validate a volume and return it as ``(C, X, Y, Z)``.

        A 3D ``(X, Y, Z)`` array is accepted for single-channel models.

        Raises:
            DatasetError: wrong rank or channel count, a non-numeric dtype, non-finite voxels.
        """
        channels = self.manifest.input.channels
        image = np.asarray(image)
        if image.ndim == 3 and channels == 1:
            image = image[None]
        if image.ndim != 4:
            shape = tuple(image.shape)
            raise DatasetError(
                f"{source}: an image of shape {shape} is not a volume; expected (X, Y, Z)"
                + (
                    " or (C, X, Y, Z)"
                    if channels == 1
                    else f" with {channels} channels (C, X, Y, Z)"
                )
            )
        if image.shape[0] != channels:
            raise ChannelMismatchError(
                f"{source}: has {image.shape[0]} channel(s); the model takes {channels}"
            )
        if image.dtype.kind not in "iuf":
            raise DatasetError(f"{source}: voxel type {image.dtype} is not integer or float")
        if image.dtype.kind == "f":
            bad = int(np.count_nonzero(~np.isfinite(image)))
            if bad:
                raise DatasetError(
                    f"{source}: {bad} voxel(s) are NaN or infinite; expected finite intensities"
                )
        return image

    def preprocess(
        self,
        image: np.ndarray,
        source: str = "input",
        affine: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
    ) -> np.ndarray:
        """``(C, X, Y, Z)`` volume -> real network inputs ``(N, C, *patch)`` for timing calls.

        Whole slices at network size; for a window recipe the centre window of every
        normalised slice (zero-padded when the slice is smaller), at the scan's own spacing;
        for nnU-Net, windows of the preprocessed case (needs ``spacing`` or ``affine``).
        """
        volume = self.check_volume(image, source)
        if spacing is None and affine is not None:
            spacing = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
        spc = None if spacing is None else (float(spacing[0]), float(spacing[1]), float(spacing[2]))
        return self.pipeline.network_inputs(self, volume, spc, affine, source)

    def reorientation(self, affine: np.ndarray | None) -> tuple[str, str] | None:
        """``(input codes, network codes)`` when an image with ``affine`` must be reoriented.

        ``None`` when no affine is given, the manifest records no orientation (bundles
        exported before it was recorded), or the image is already in the training order.

        Raises:
            ConfigError: a degenerate ``affine`` (see
                :func:`~medseg.transforms.orientation.axis_codes`).
        """
        target = self.manifest.orientation
        if affine is None or target is None:
            return None
        codes = axis_codes(affine)
        return None if codes == target else (codes, target)

    def segment(
        self,
        image: np.ndarray,
        probabilities: bool = False,
        progress: ProgressCallback | None = None,
        source: str = "input",
        affine: np.ndarray | None = None,
        spacing: Sequence[float] | None = None,
    ) -> Segmentation:
        """Segment one volume.

        Args:
            image: ``(C, X, Y, Z)`` (or ``(X, Y, Z)`` for one channel) raw intensities.
            probabilities: also return ``(K, X, Y, Z)`` softmax probabilities (before any
                post-processing, which changes the labels only).
            progress: called with ``(slices done, total slices)`` after every call of the
                network (nnU-Net: windows done); an exception raised in it stops the volume
                (Triton's segmenter stops an abandoned request so).
            source: name of the input for error messages (the file or folder).
            affine: ``(4, 4)`` voxel-to-world matrix of ``image`` (RAS+ mm). When given and
                the manifest records an orientation, an image in another voxel order is
                transposed/flipped to it for the network and the outputs back (exact, no
                interpolation). ``None``: the image is taken as it is, in the training
                data's voxel order.
            spacing: voxel sizes of ``image`` in mm along its own axes; ``None``: the column
                norms of ``affine``. Window recipes with a target spacing need one of them;
                post-processing uses it for island volumes (1 mm voxels without).

        Returns:
            Labels (and probabilities) on the input's grid; ``reoriented_from`` says whether
            the image was reoriented.

        Raises:
            DatasetError: a bad volume (see :meth:`check_volume` and :meth:`preprocess`).
            ConfigError: a degenerate ``affine``; a window recipe without spacing.
        """
        self.load()
        t0 = time.perf_counter()
        volume = self.check_volume(image, source)
        if spacing is None and affine is not None:
            spacing = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
        if spacing is not None and len(spacing) != 3:
            raise ConfigError(f"{source}: spacing {tuple(spacing)} must be 3 values (mm)")
        change = self.reorientation(affine) if self.pipeline.reorients else None
        if change is not None:
            # contiguous: same memory layout, hence same float sums, as a training-order input
            volume = np.ascontiguousarray(to_orientation(volume, *change, leading=1))
        net_spacing = None
        if spacing is not None:
            perm = reorient_plan(*change)[0] if change is not None else (0, 1, 2)
            net_spacing = (
                float(spacing[perm[0]]),
                float(spacing[perm[1]]),
                float(spacing[perm[2]]),
            )
        out = self.pipeline.run(
            self, volume, net_spacing, affine, probabilities, progress, source, t0
        )
        labels, probs, timing = out.labels, out.probabilities, out.timing
        if change is not None:
            labels = from_orientation(labels, *change)
            if probs is not None:
                probs = from_orientation(probs, *change, leading=1)
        labels = np.ascontiguousarray(labels)
        if probs is not None:
            probs = np.ascontiguousarray(probs, dtype=np.float32)
        post = self.manifest.postprocess
        if self.postprocess and post is not None and post.active:
            t = time.perf_counter()
            labels = apply_postprocess(labels, post, self.manifest.classes, spacing)
            extra = time.perf_counter() - t
            timing = dataclasses.replace(timing, postprocess_s=timing.postprocess_s + extra)
        reoriented_from = change[0] if change is not None else None
        return Segmentation(labels, probs, out.units, timing, reoriented_from)

    # -- lifetime ---------------------------------------------------------------------------
    def runners(self) -> tuple[Backend, ...]:
        """Every backend this segmenter calls (one; an nnU-Net ensemble: one per fold)."""
        return tuple(self.backends.values())

    def load(self) -> None:
        """Load every backend (once; :meth:`segment` calls it)."""
        for backend in self.runners():
            backend.load()

    def close(self) -> None:
        for backend in self.runners():
            backend.close()

    def __enter__(self) -> Self:
        self.load()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
