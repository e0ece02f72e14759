"""What every runtime pipeline shares: the protocol, the result types and the batch call.

A pipeline turns a checked ``(C, X, Y, Z)`` volume into labels (and probabilities) with the
backends of a :class:`~medseg.runtime.segmenter.Segmenter`. There is one per recipe kind
(:attr:`Recipe.pipeline_kind <medseg.transforms.preprocessing.Recipe.pipeline_kind>`): whole
``"slices"``, sliding ``"window"`` and ``"nnunet"`` (see :mod:`medseg.runtime.pipelines`).
The segmenter keeps the steps around it: input checks, reorientation, post-processing, timing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from medseg.runtime.backends import Backend, InferTiming

if TYPE_CHECKING:
    from medseg.bundle.manifest import Manifest
    from medseg.runtime.segmenter import Segmenter

__all__ = [
    "GPU_ENGINE_BACKENDS",
    "Pipeline",
    "PipelineOutput",
    "ProgressCallback",
    "SegmentTiming",
    "Segmentation",
    "check_batch_range",
    "infer_padded",
    "softmax",
]

ProgressCallback = Callable[[int, int], None]

#: Backends whose activations live in GPU memory sized by the engine profile: window
#: recipes batch up to the profile's maximum there.
GPU_ENGINE_BACKENDS = ("tensorrt", "tensorrt-rtx")


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
        num_slices: slices run through the network (nnU-Net: windows per fold).
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


@dataclass(frozen=True)
class PipelineOutput:
    """What :meth:`Pipeline.run` returns: labels ``(X, Y, Z)`` uint8 and probabilities
    ``(K, X, Y, Z)`` (or ``None``) on the grid of the volume it was given, the network's
    work units (slices or windows) and the timing so far."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    units: int
    timing: SegmentTiming


class Pipeline(Protocol):
    """One recipe kind's way through the network (a small stateless object).

    Attributes:
        kind: the recipe kind it runs (``"slices"``, ``"window"``, ``"nnunet"``).
        unit: what one backend batch holds, for messages (``"slices"`` or ``"windows"``).
        reorients: the segmenter turns the volume to the manifest's orientation before
            :meth:`run` (``False``: the pipeline reads the affine itself, as nnU-Net does).
        ensemble: the bundle may hold several folds, each with its own backend.
    """

    kind: str
    unit: str
    reorients: bool
    ensemble: bool

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
        """``{model or fold: unloaded backend}`` for a bundle (sha256-checked files)."""
        ...

    def default_batch_size(self, manifest: Manifest, backend_name: str) -> int:
        """Slices or windows per backend call when the caller gives none."""
        ...

    def resolve_tta(self, manifest: Manifest, tta: bool | None) -> bool:
        """Whether mirroring TTA runs (``None``: the kind's default); ConfigError if it cannot."""
        ...

    def network_inputs(
        self,
        segmenter: Segmenter,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None,
        affine: np.ndarray | None,
        source: str,
    ) -> np.ndarray:
        """Real network inputs ``(N, C, *patch)`` from a checked volume, for timing calls."""
        ...

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
        """Segment a checked (and, with :attr:`reorients`, reoriented) volume.

        Args:
            segmenter: backends, manifest, batch size, TTA.
            volume: ``(C, X, Y, Z)``.
            spacing: voxel sizes in mm along the volume's axes, or ``None``.
            affine: the caller's ``(4, 4)`` voxel-to-world matrix of the *input* (before
                reorientation), or ``None``.
            probabilities: also return softmax probabilities.
            progress: ``(done, total)`` callback.
            source: the input's name for messages.
            t0: ``time.perf_counter()`` when the segmenter started on this volume.
        """
        ...


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


def check_batch_range(manifest: Manifest, size: int) -> int:
    """``size`` when it is inside the model's batch range; ConfigError otherwise."""
    from medseg.errors import ConfigError

    batch = manifest.input.batch
    if not batch.contains(size):
        raise ConfigError(
            f"batch size {size} is outside the model's batch range {batch} (min:opt:max)"
        )
    return size
