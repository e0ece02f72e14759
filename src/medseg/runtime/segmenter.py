"""Volume segmentation with a bundle: the scanner-side pipeline in one object.

``Segmenter.from_bundle(bundle)`` reads ``medseg.json``, picks a backend, and
:meth:`Segmenter.segment` turns a ``(C, X, Y, Z)`` volume into an ``(X, Y, Z)`` label map:
normalise the whole volume with the manifest's recipe, cut it into slices along the
recipe's axis, pad or resize them to network size, run them in batches within the
model's batch range, take the argmax, undo the padding/resizing, and stack the slices
back. Everything around the backend is numpy; the labels do not depend on the batch size.

Bundles with a ``"window"`` recipe (schema 2) take the sliding-window path of
:mod:`medseg.runtime.volume` instead: resample in-plane to the recipe's spacing, windows of
the static patch batched up to the engine's maximum, probabilities resampled back to the
scan's grid, argmax; then the manifest's per-class post-processing (``postprocess=False``
switches it off).

Given the volume's affine and a manifest that records the training orientation (e.g. RAS),
a volume in another voxel order (a standard axial DICOM series is LPS) is transposed and
flipped to the training order for the network, and the outputs are turned back, so they stay
on the input's grid.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from medseg.bundle.manifest import Manifest, file_precision
from medseg.data.nnunet_recipe import NnunetRecipe
from medseg.data.orientation import axis_codes, from_orientation, reorient_plan, to_orientation
from medseg.data.postprocess import apply_postprocess
from medseg.data.preprocessing import Geometry, bring_to_size, normalize_volume, restore_size
from medseg.errors import ChannelMismatchError, ConfigError, DatasetError
from medseg.runtime.backends import BACKENDS, Backend, InferTiming, create_backend
from medseg.runtime.sliding_window import pad_to_patch
from medseg.runtime.volume import segment_windowed

__all__ = [
    "GPU_ENGINE_BACKENDS",
    "SegmentTiming",
    "Segmentation",
    "Segmenter",
    "default_batch_size",
    "softmax",
]

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class SegmentTiming:
    """Where one volume's time went, in seconds.

    Attributes:
        preprocess_s: normalisation, slicing, padding/resizing (window recipes: also the
            in-plane resampling to the target spacing and back, and the argmax).
        inference_s: the backend calls (host<->device copies included).
        compute_s: the network itself (CUDA events on a GPU; equals inference on CPU).
        postprocess_s: argmax/softmax, undoing the padding, stacking the volume (window
            recipes: gathering and Gaussian blending of windows, and the connected-component
            post-processing).
        batches: number of backend calls.
    """

    preprocess_s: float
    inference_s: float
    compute_s: float
    postprocess_s: float
    batches: int

    @property
    def total_s(self) -> float:
        return self.preprocess_s + self.inference_s + self.postprocess_s

    @property
    def overhead_share(self) -> float:
        """Pre- plus post-processing time as a share of the backend time (0.15 = 15 %)."""
        return (self.preprocess_s + self.postprocess_s) / max(self.inference_s, 1e-12)


@dataclass(frozen=True)
class Segmentation:
    """The result for one volume.

    Attributes:
        labels: ``(X, Y, Z)`` uint8 class indices (the manifest's ``classes`` values).
        probabilities: ``(K, X, Y, Z)`` float32 softmax probabilities, or ``None``.
        num_slices: slices run through the network.
        timing: where the time went.
        reoriented_from: the input's axis codes (e.g. ``"LPS"``) when it was reoriented to
            the manifest's orientation for the network, else ``None``. The outputs are on the
            input's grid either way.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    num_slices: int
    timing: SegmentTiming
    reoriented_from: str | None = None


def infer_padded(
    backend: Backend, batch: np.ndarray, minimum: int
) -> tuple[np.ndarray, InferTiming]:
    """One backend call on ``(B, C, ...)`` inputs; logits ``(B, K, ...)`` and the call's timing.

    A batch smaller than the model's minimum batch size (a static-batch engine) is padded
    with empty inputs whose outputs are dropped.
    """
    real = len(batch)
    if real < minimum:
        pad = np.zeros((minimum - real, *batch.shape[1:]), dtype=batch.dtype)
        batch = np.concatenate([batch, pad])
    logits = backend.infer(np.ascontiguousarray(batch))[:real]
    timing = backend.last_timing
    assert timing is not None  # set by every infer() call
    return logits, timing


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (float32)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    exp = np.exp(shifted, dtype=np.float32)
    return exp / exp.sum(axis=axis, keepdims=True)


#: Backends whose activations live in GPU memory sized by the engine profile: window
#: recipes batch up to the profile's maximum there.
GPU_ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")


def default_batch_size(manifest: Manifest, backend_name: str) -> int:
    """Windows (or slices) per backend call when the caller gives none.

    The manifest's ``opt`` batch, except for window recipes on a TensorRT engine
    (:data:`GPU_ENGINE_BACKENDS`), which take the profile's ``max``. On CPU backends a large
    batch buys no speed but holds every window's activations in host memory: the demo
    bundle (224x256 windows) peaks at 11.0 GB RSS with batch 32 against 2.3 GB with batch 8
    in ONNX Runtime, at the same speed (measured on 2 shared cores; labels do not depend on
    the batch size).

    Args:
        manifest: the bundle's manifest.
        backend_name: :attr:`Backend.name` of the backend that will run.
    """
    batch = manifest.input.batch
    windowed = getattr(manifest.preprocessing, "size_policy", None) == "window"
    return batch.max if windowed and backend_name in GPU_ENGINE_BACKENDS else batch.opt


class Segmenter:
    """Segments volumes with one backend of one bundle.

    Args:
        backend: a (not necessarily loaded) :class:`~medseg.runtime.backends.Backend`.
        manifest: the bundle's manifest (recipe, classes, input ranges).
        precision: which of the bundle's precisions the backend runs (for reports).
        batch_size: slices (window recipes: windows) per backend call; ``None``: the
            manifest's optimal batch size, and for window recipes on TensorRT the profile's
            maximum (:func:`default_batch_size`).
        tta: window recipes: mirroring test-time augmentation along the recipe's
            ``mirror_axes``.
        postprocess: apply the manifest's per-class post-processing (when it has any).
    """

    def __init__(
        self,
        backend: Backend,
        manifest: Manifest,
        precision: str = "fp32",
        batch_size: int | None = None,
        tta: bool | None = None,
        postprocess: bool = True,
    ) -> None:
        if isinstance(manifest.preprocessing, NnunetRecipe):
            raise ConfigError("an nnU-Net bundle runs with NnunetSegmenter (Segmenter.from_bundle)")
        tta = bool(tta)
        batch = manifest.input.batch
        windowed = manifest.preprocessing.size_policy == "window"
        if tta and not windowed:
            raise ConfigError(
                "--tta needs a bundle with a sliding-window recipe (size_policy 'window'); "
                f"this one uses {manifest.preprocessing.size_policy!r}"
            )
        if tta and not manifest.preprocessing.mirror_axes:
            raise ConfigError("--tta: this bundle's recipe records no mirror_axes to flip")
        size = default_batch_size(manifest, backend.name) if batch_size is None else batch_size
        if not batch.contains(size):
            raise ConfigError(
                f"batch size {size} is outside the model's batch range {batch} (min:opt:max)"
            )
        if manifest.num_classes > 255:
            raise ConfigError(f"{manifest.num_classes} classes do not fit uint8 label maps")
        self.backend = backend
        self.manifest = manifest
        self.precision = precision
        self.batch_size = size
        self.tta = tta
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
    ) -> Segmenter:
        """Open a bundle with a backend.

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
        if isinstance(manifest.preprocessing, NnunetRecipe):  # runtime/nnunet_pipeline.py
            from medseg.runtime.nnunet_pipeline import NnunetSegmenter, fold_backends

            if cuda_graph:
                raise ConfigError("--cuda-graph is a TensorRT option; nnU-Net bundles run on CPU")
            runners = fold_backends(bundle, manifest, backend, precision, providers, threads)
            return NnunetSegmenter(runners, manifest, precision, batch_size, tta, postprocess)
        runner = create_backend(
            bundle,
            manifest,
            backend,
            precision,
            providers=providers,
            threads=threads,
            cuda_graph=cuda_graph,
        )
        return cls(runner, manifest, precision, batch_size, tta=tta, postprocess=postprocess)

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

    def preprocess(self, image: np.ndarray, source: str = "input") -> tuple[np.ndarray, Geometry]:
        """``(C, X, Y, Z)`` volume -> network-size slices ``(N, C, H, W)`` and their geometry.

        For a window recipe: the centre window of every normalised slice (zero-padded when the
        slice is smaller), at the scan's own spacing: real network inputs for timing.
        """
        return self._slices(self.check_volume(image, source), source)

    def _slices(self, image: np.ndarray, source: str) -> tuple[np.ndarray, Geometry]:
        """:meth:`preprocess` of a volume already checked by :meth:`check_volume`."""
        recipe = self.manifest.medseg_recipe("the slice pipeline")
        volume = normalize_volume(image, recipe)
        axis = recipe.slice_axis
        stack = np.moveaxis(volume, axis + 1, 0)  # (N, C, H, W)
        n, c, h, w = stack.shape
        if recipe.size_policy == "window":
            assert recipe.patch_size is not None  # guaranteed by Recipe
            ph, pw = recipe.patch_size
            padded, _ = pad_to_patch(stack, (ph, pw))
            top, left = (padded.shape[2] - ph) // 2, (padded.shape[3] - pw) // 2
            windows = padded[:, :, top : top + ph, left : left + pw]
            return np.ascontiguousarray(windows), Geometry((h, w), (ph, pw), (0, 0), "window")
        flat, _, geometry = bring_to_size(stack.reshape(n * c, h, w), recipe)
        slices = np.ascontiguousarray(flat.reshape(n, c, *geometry.padded), dtype=np.float32)
        spec = self.manifest.input
        ph, pw = geometry.padded
        if not (spec.height.contains(ph) and spec.width.contains(pw)):
            raise DatasetError(
                f"{source}: slices along axis {'xyz'[axis]} are {h}x{w} voxels "
                f"({ph}x{pw} at network size); the model accepts height {spec.height} and "
                f"width {spec.width} (min:opt:max); re-export the bundle with --height/--width "
                "or --dynamic-hw to accept this size"
            )
        return slices, geometry

    def predict_logits(
        self, slices: np.ndarray, progress: ProgressCallback | None = None
    ) -> tuple[np.ndarray, float, float, int]:
        """Run ``(N, C, H, W)`` slices in batches.

        Returns logits ``(N, K, H, W)``, backend seconds, network compute seconds, calls.

        The last partial batch is padded with empty slices when it is smaller than the
        model's minimum batch size (a static-batch engine); their outputs are dropped.
        """
        total = len(slices)
        outputs: list[np.ndarray] = []
        seconds = compute = 0.0
        calls = 0
        minimum = self.manifest.input.batch.min
        for start in range(0, total, self.batch_size):
            batch = slices[start : start + self.batch_size]
            real = len(batch)
            logits, timing = infer_padded(self.backend, batch, minimum)
            seconds += timing.total_ms / 1e3
            compute += timing.compute_ms / 1e3
            calls += 1
            outputs.append(logits)
            if progress is not None:
                progress(min(start + real, total), total)
        return np.concatenate(outputs), seconds, compute, calls

    def reorientation(self, affine: np.ndarray | None) -> tuple[str, str] | None:
        """``(input codes, network codes)`` when an image with ``affine`` must be reoriented.

        ``None`` when no affine is given, the manifest records no orientation (bundles
        exported before it was recorded), or the image is already in the training order.

        Raises:
            ConfigError: a degenerate ``affine`` (see :func:`~medseg.data.orientation.axis_codes`).
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
            progress: called with ``(slices done, total slices)`` after every batch (window
                recipes: every block of slices).
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
        change = self.reorientation(affine)
        if spacing is None and affine is not None:
            spacing = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
        if change is not None:
            # contiguous: same memory layout, hence same float sums, as a training-order input
            volume = np.ascontiguousarray(to_orientation(volume, *change, leading=1))
        net_spacing = None
        if spacing is not None:
            if len(spacing) != 3:
                raise ConfigError(f"{source}: spacing {tuple(spacing)} must be 3 values (mm)")
            perm = reorient_plan(*change)[0] if change is not None else (0, 1, 2)
            net_spacing = tuple(float(spacing[p]) for p in perm)
        if self.manifest.medseg_recipe("Segmenter").size_policy == "window":
            labels, probs, num, timing = self._segment_windowed(
                volume, net_spacing, probabilities, progress, t0
            )
        else:
            labels, probs, num, timing = self._segment_slices(
                volume, probabilities, progress, source, t0
            )
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
            timing = SegmentTiming(
                timing.preprocess_s,
                timing.inference_s,
                timing.compute_s,
                timing.postprocess_s + extra,
                timing.batches,
            )
        reoriented_from = change[0] if change is not None else None
        return Segmentation(labels, probs, num, timing, reoriented_from)

    def _segment_slices(
        self,
        volume: np.ndarray,
        probabilities: bool,
        progress: ProgressCallback | None,
        source: str,
        t0: float,
    ) -> tuple[np.ndarray, np.ndarray | None, int, SegmentTiming]:
        """The pad/resize path: every slice whole through the network, in batches."""
        slices, geometry = self._slices(volume, source)
        t1 = time.perf_counter()
        logits, inference_s, compute_s, calls = self.predict_logits(slices, progress)
        t2 = time.perf_counter()
        axis = self.manifest.medseg_recipe("Segmenter").slice_axis
        labels = restore_size(logits.argmax(axis=1).astype(np.uint8), geometry, is_label=True)
        labels = np.moveaxis(labels, 0, axis)
        probs = None
        if probabilities:
            restored = restore_size(softmax(logits), geometry)  # (N, K, h, w)
            probs = np.moveaxis(restored, 0, axis + 1)
        timing = SegmentTiming(t1 - t0, inference_s, compute_s, time.perf_counter() - t2, calls)
        return labels, probs, len(slices), timing

    def _segment_windowed(
        self,
        volume: np.ndarray,
        spacing: tuple[float, ...] | None,
        probabilities: bool,
        progress: ProgressCallback | None,
        t0: float,
    ) -> tuple[np.ndarray, np.ndarray | None, int, SegmentTiming]:
        """The window path (:func:`~medseg.runtime.volume.segment_windowed`)."""
        minimum = self.manifest.input.batch.min
        stats = {"inference": 0.0, "compute": 0.0, "calls": 0}

        def predict(batch: np.ndarray) -> np.ndarray:
            logits, timing = infer_padded(self.backend, batch, minimum)
            stats["inference"] += timing.total_ms / 1e3
            stats["compute"] += timing.compute_ms / 1e3
            stats["calls"] += 1
            return logits

        start = time.perf_counter()
        result = segment_windowed(
            volume,
            spacing,
            self.manifest.medseg_recipe("Segmenter"),
            predict,
            self.batch_size,
            self.manifest.num_classes,
            tta=self.tta,
            probabilities=probabilities,
            progress=progress,
        )
        wall = time.perf_counter() - start
        # time inside predict() beyond the backend's own calls counts as windowing overhead
        outside = max(wall - result.resample_s - stats["inference"], 0.0)
        timing = SegmentTiming(
            (start - t0) + result.resample_s,
            stats["inference"],
            stats["compute"],
            outside,
            int(stats["calls"]),
        )
        return result.labels, result.probabilities, result.num_slices, timing

    # -- lifetime ---------------------------------------------------------------------------
    def runners(self) -> tuple[Backend, ...]:
        """Every backend this segmenter calls (one; an nnU-Net ensemble: one per fold)."""
        return (self.backend,)

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
