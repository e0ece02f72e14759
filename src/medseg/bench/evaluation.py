"""Accuracy of a bundle variant on a dataset's volumes, through the scanner-side runtime.

Each evaluated case is segmented whole by :class:`~medseg.runtime.Segmenter` (files read with
the runtime's own reader, so I/O is part of the path), then scored on its evaluated slices:
the bundle's recorded validation slices (``--split val``), or whole volumes (``test``,
``all``). Dice, sensitivity and specificity pool the voxels of every evaluated slice (so
``val`` reproduces the Dice recorded at export); HD95 is one value per case: the surface
distances of each contiguous block of evaluated slices (a whole volume is one block) are
computed within the block and pooled (:func:`~medseg.metrics.pooled_surface_distances`), then
averaged over cases. (Averaging one HD95 per block let an 8-slice block at the edge of the
brain, holding 48 reference WM voxels and no predicted ones, count the image diagonal,
305 mm, as a fifth of the demo bundle's WM HD95.)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medseg.bench.results import AccuracyResult
from medseg.bundle.manifest import Manifest
from medseg.data.nifti import load_nifti, save_nifti
from medseg.data.nnunet import NnUNetDataset
from medseg.errors import ConfigError, DatasetError
from medseg.metrics import DiceAccumulator, compute_dice, pooled_surface_distances
from medseg.runtime import Segmenter, load_scan

__all__ = ["EvalCase", "VariantEvaluation", "evaluate_variant", "evaluation_cases"]

Split = Literal["val", "test", "all"]


@dataclass(frozen=True)
class EvalCase:
    """One case to evaluate: its files and which slices (along the recipe axis) count.

    Attributes:
        case_id: dataset case id.
        images: one file per channel.
        label: the reference label map.
        slices: evaluated slice indices along the bundle's slice axis; ``None``: all.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path
    slices: tuple[int, ...] | None


def evaluation_cases(
    dataset: NnUNetDataset, manifest: Manifest, split: Split
) -> tuple[list[EvalCase], str]:
    """The cases of ``split`` and a one-line description of what is evaluated.

    Raises:
        ConfigError: the dataset's labels differ from the bundle's classes; the bundle
            records no validation slices (``val``); the validation cases are not in the
            dataset; no labelled test cases (``test``).
    """
    if dict(dataset.spec.labels) != dict(manifest.classes):
        raise ConfigError(
            f"dataset {dataset.root} has labels {dict(dataset.spec.labels)} but the bundle's "
            f"classes are {dict(manifest.classes)}; benchmark on a dataset with the same labels"
        )
    if split == "val":
        validation = manifest.source.get("validation", {})
        case_ids = validation.get("case_ids")
        if case_ids:  # sliding-window bundles are validated on whole cases
            missing = sorted(set(case_ids) - set(dataset.case_ids("train")))
            if missing:
                raise ConfigError(
                    f"the bundle's validation cases {missing} are not in dataset "
                    f"{dataset.root}; use --split test (imagesTs/labelsTs) or --split all"
                )
            whole = [
                EvalCase(c, dataset.case(c).images, _label(dataset, c), None)
                for c in sorted(case_ids)
            ]
            return whole, f"validation split recorded in the bundle: {len(whole)} whole case(s)"
        ids = validation.get("slice_ids")
        if not ids and manifest.preprocessing.pipeline_kind == "nnunet":
            raise ConfigError(
                "this nnU-Net bundle records no validation cases; bench it on labelled cases "
                "it was not trained on: --split test (imagesTs/labelsTs) or --split all"
            )
        if not ids:
            raise ConfigError(
                "this bundle records no validation slice ids (exported by an older medseg); "
                "re-export it, or use --split test / --split all"
            )
        axis = "xyz"[manifest.medseg_recipe("medseg bench").slice_axis]
        by_case: dict[str, list[int]] = {}
        for text in ids:
            case_id, _, where = str(text).rpartition(":")
            if not where.startswith(f"{axis}="):
                raise ConfigError(f"validation slice id {text!r} is not along axis {axis}")
            by_case.setdefault(case_id, []).append(int(where[2:]))
        missing = sorted(set(by_case) - set(dataset.case_ids("train")))
        if missing:
            raise ConfigError(
                f"the bundle's validation cases {missing} are not in dataset {dataset.root}; "
                "use --split test (imagesTs/labelsTs) or --split all"
            )
        cases = [
            EvalCase(c, dataset.case(c).images, _label(dataset, c), tuple(sorted(z)))
            for c, z in sorted(by_case.items())
        ]
        described = (
            f"validation split recorded in the bundle: {len(ids)} slices of {len(cases)} case(s)"
        )
        return cases, described
    subset: Literal["train", "test"] = "test" if split == "test" else "train"
    files = [c for c in dataset.cases(subset) if c.label is not None]
    if not files:
        raise ConfigError(
            f"dataset {dataset.root} has no labelled {subset} cases for --split {split}"
        )
    cases = [EvalCase(c.case_id, c.images, c.label, None) for c in files if c.label]
    return cases, f"{len(cases)} whole {subset} volume(s)"


def _label_map(data: np.ndarray, path: Path) -> np.ndarray:
    """Integer class indices of a reference file (float files holding whole numbers are cast)."""
    array = np.asarray(data)
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "f" and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    raise DatasetError(
        f"{path}: label map of type {array.dtype} holds non-integer values; expected integer "
        "class indices"
    )


def _label(dataset: NnUNetDataset, case_id: str) -> Path:
    label = dataset.case(case_id).label
    if label is None:
        raise ConfigError(f"case {case_id} of {dataset.root} has no label map")
    return label


@dataclass(frozen=True)
class VariantEvaluation:
    """What one (backend, precision) pass over the cases produced.

    Attributes:
        accuracy: the scores (drop and agreement filled when ``reference`` was given).
        labels: case id -> evaluated predicted labels ``(n_voxels,)`` uint8 (for agreement).
        volume_seconds: end-to-end seconds per case: read, segment, write the mask.
        prepost_shares: per case, pre- plus post-processing time over backend time.
        fold_seconds: fold ensembles: ``{fold: backend seconds per case}``; else empty.
    """

    accuracy: AccuracyResult
    labels: dict[str, np.ndarray]
    volume_seconds: list[float]
    prepost_shares: list[float] = field(default_factory=list)
    fold_seconds: dict[str, list[float]] = field(default_factory=dict)


def _blocks(indices: Sequence[int]) -> list[list[int]]:
    """Contiguous runs of sorted indices: [1, 2, 3, 7, 8] -> [[1, 2, 3], [7, 8]]."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def evaluate_variant(
    segmenter: Segmenter,
    cases: Sequence[EvalCase],
    reference: VariantEvaluation | None = None,
    overlay_path: Path | None = None,
    on_case: Callable[[str], None] | None = None,
) -> VariantEvaluation:
    """Segment every case, score it, and draw the worst evaluated slice.

    Args:
        segmenter: the variant (backend + precision) to evaluate.
        cases: from :func:`evaluation_cases`.
        reference: the FP32 pass of the same backend, for the Dice drop and agreement.
        overlay_path: PNG of the worst slice (lowest mean foreground Dice) to write.
        on_case: called with each case id once it is done (progress).
    """
    manifest = segmenter.manifest
    classes = {n: v for n, v in manifest.classes.items() if v != 0}
    axis = manifest.preprocessing.report_axis  # slices of overlays and HD95 blocks
    dice = DiceAccumulator(classes, empty="nan")  # pooled counts; an absent class is null
    hd95: dict[str, list[float]] = {n: [] for n in classes}
    labels: dict[str, np.ndarray] = {}
    seconds: list[float] = []
    shares: list[float] = []
    per_fold: dict[str, list[float]] = {}
    worst: dict[str, Any] | None = None
    worst_arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        for case in cases:
            start = time.perf_counter()
            scan = load_scan(case.images)
            result = segmenter.segment(
                scan.image, source=scan.source, affine=scan.affine, spacing=scan.spacing
            )
            save_nifti(Path(tmp) / "mask.nii.gz", result.labels, scan.affine, dtype=np.uint8)
            seconds.append(time.perf_counter() - start)
            shares.append(result.timing.overhead_share)
            for fold, fold_s in getattr(result.timing, "fold_inference_s", {}).items():
                per_fold.setdefault(fold, []).append(fold_s)
            ref_image = load_nifti(case.label)
            ref = _label_map(ref_image.data, case.label)
            if ref.shape != result.labels.shape:
                raise ConfigError(
                    f"{case.label}: shape {ref.shape} differs from its image {result.labels.shape}"
                )
            depth = ref.shape[axis]
            if case.slices is not None and max(case.slices) >= depth:
                raise ConfigError(
                    f"{case.label}: the bundle's validation slice {'xyz'[axis]}={max(case.slices)} "
                    f"is outside this case's {depth} slices; this is not the dataset the bundle "
                    "was validated on: use --split test or --split all"
                )
            index = case.slices if case.slices is not None else tuple(range(depth))
            pred_eval = np.take(result.labels, index, axis=axis)
            ref_eval = np.take(ref, index, axis=axis)
            labels[case.case_id] = pred_eval.ravel()
            dice.update(pred_eval, ref_eval)
            for name, value in _case_hd95(
                result.labels, ref, index, axis, classes, ref_image.spacing
            ).items():
                hd95[name].append(value)
            candidate = _worst_slice(scan.image[0], ref, result.labels, index, axis, classes)
            if candidate and (worst is None or candidate[0] < worst["dice"]):
                worst = {"case_id": case.case_id, "axis": axis, "index": candidate[1]}
                worst.update(dice=candidate[0], png=None)
                worst_arrays = candidate[2]
            if on_case is not None:
                on_case(case.case_id)
    if overlay_path is not None and worst is not None and worst_arrays is not None:
        from medseg.viz.overlay import save_prediction_png

        title = f"{worst['case_id']} {'xyz'[axis]}={worst['index']}: Dice {worst['dice']:.3f}"
        save_prediction_png(*worst_arrays, overlay_path, manifest.classes, title=title)
        worst["png"] = overlay_path.name
    accuracy = _accuracy(dice, hd95, labels, reference, worst)
    return VariantEvaluation(accuracy, labels, seconds, shares, per_fold)


def _case_hd95(
    pred: np.ndarray,
    ref: np.ndarray,
    index: Sequence[int],
    axis: int,
    classes: dict[str, int],
    spacing: Sequence[float],
) -> dict[str, float]:
    """HD95 in mm per class of one case's evaluated slices, blocks pooled.

    Args:
        pred: predicted labels ``(X, Y, Z)``.
        ref: reference labels, same shape.
        index: evaluated slice indices along ``axis``, sorted.
        axis: the slice axis.
        classes: class name -> label value (background left out).
        spacing: voxel size in mm per axis.

    Returns:
        class name -> HD95; a class that neither mask holds in any evaluated slice is left
        out (it says nothing about a boundary).
    """
    blocks = [
        (np.take(pred, block, axis=axis), np.take(ref, block, axis=axis))
        for block in _blocks(index)
    ]
    out: dict[str, float] = {}
    for name, value in classes.items():
        parts = [(p == value, r == value) for p, r in blocks]
        if any(p.any() or r.any() for p, r in parts):
            out[name] = pooled_surface_distances(parts, spacing).hd95_mm
    return out


def _worst_slice(
    image: np.ndarray,
    ref: np.ndarray,
    pred: np.ndarray,
    index: Sequence[int],
    axis: int,
    classes: dict[str, int],
) -> tuple[float, int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """(mean foreground Dice, slice index, (image, ref, pred) 2D) of the worst slice with
    at least 1% labelled pixels; ``None`` when no slice qualifies."""
    best: tuple[float, int] | None = None
    for i in index:
        r, p = np.take(ref, i, axis=axis), np.take(pred, i, axis=axis)
        if np.count_nonzero(r) < 0.01 * r.size:
            continue
        scores = [v for v in compute_dice(p, r, classes, empty="nan").values() if v == v]
        score = float(np.mean(scores)) if scores else 1.0  # no class here: nothing missed
        if best is None or score < best[0]:
            best = (score, int(i))
    if best is None:
        return None
    i = best[1]
    arrays = tuple(np.take(a, i, axis=axis) for a in (image, ref, pred))
    return best[0], i, (arrays[0], arrays[1], arrays[2])


def _accuracy(
    dice_acc: DiceAccumulator,
    hd95: dict[str, list[float]],
    labels: dict[str, np.ndarray],
    reference: VariantEvaluation | None,
    worst: dict[str, Any] | None,
) -> AccuracyResult:
    dice = dice_acc.pooled_dice()
    sens = list(dice_acc.sensitivity().values())
    spec = list(dice_acc.specificity().values())
    hd = {n: (float(np.nanmean(v)) if np.isfinite(v).any() else None) for n, v in hd95.items()}
    defined = [v for v in hd.values() if v is not None]
    dice_mean = dice_acc.mean()
    drop = agreement = None
    if reference is not None:
        drop = 100.0 * (reference.accuracy.dice_mean - dice_mean)
        same = sum(int(np.count_nonzero(labels[c] == reference.labels[c])) for c in labels)
        agreement = same / max(sum(v.size for v in labels.values()), 1)
    return AccuracyResult(
        dice_mean=dice_mean,
        dice_per_class=dice,
        hd95_mm=float(np.mean(defined)) if defined else None,
        hd95_mm_per_class=hd,
        sensitivity=float(np.nanmean(sens)),
        specificity=float(np.nanmean(spec)),
        dice_drop_pts=drop,
        argmax_agreement=agreement,
        worst_slice=worst,
    )
