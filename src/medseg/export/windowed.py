"""Export of a planned run (``"window"`` recipe): static patch input, whole-case validation.

The ONNX input is static ``patch_size`` H x W (one TensorRT profile, the fastest
configuration); only the batch axis varies. Every precision is scored on the run's
validation cases through the runtime's own sliding-window path
(:func:`medseg.runtime.volume.segment_windowed`), on ONNX Runtime for its precision entry and
on every installed CPU backend for ``backend_accuracy`` (the precision steps both exports
share: :mod:`medseg.export.precision_steps`; the INT8 guard measures on its guard backend):
each case reoriented to
the training orientation by exact flips, resampled to the target spacing, windowed, its
probabilities resampled back to the case's own grid and compared there with the case's label
file, so resampling errors count. The per-class post-processing is decided on the FP32
predictions (:mod:`medseg.export.postprocess`); the precisions' recorded Dice are the raw
network's (post-processing off), so they compare precisions, not rules.
"""

from __future__ import annotations

import datetime as dt
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medseg.atomic import atomic_dir
from medseg.bundle import ONNX_FILES, Manifest, file_sha256
from medseg.data.nnunet import NnUNetDataset
from medseg.errors import ConfigError, DatasetError
from medseg.events import Event, EventSink, file_done
from medseg.export.accuracy import Accuracy, backend_predictor, scored
from medseg.export.onnx_export import OUTPUT_NAME
from medseg.export.options import window_input_spec
from medseg.export.postprocess import ValidationCase, decide_postprocess
from medseg.export.precision_steps import export_fp32, run_precision_steps
from medseg.export.summary import summary_event
from medseg.plan.fingerprint import to_training_orientation
from medseg.runtime.sliding_window import pad_to_patch
from medseg.runtime.volume import segment_windowed
from medseg.transforms.preprocessing import Recipe, normalize_volume
from medseg.transforms.resample import resample_inplane

__all__ = ["export_windowed", "window_input_spec"]


@dataclass(frozen=True)
class _Case:
    """A validation case in the training orientation: image, labels, spacing, evaluated mask."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None


def _validation_cases(
    dataset: NnUNetDataset, split: dict[str, Any] | None, recipe: Recipe
) -> tuple[list[_Case], dict[str, Any]]:
    """The run's validation cases (contract E ``split``) and the manifest's validation record."""
    if not isinstance(split, dict) or not split.get("val"):
        raise ConfigError(
            "the checkpoint records no validation split (key 'split'); re-train it with this "
            "medseg to export a sliding-window bundle"
        )
    ids = [str(c) for c in split["val"]]
    missing = sorted(set(ids) - set(dataset.case_ids("train")))
    if missing:
        raise DatasetError(
            f"the run's validation cases {missing} are not in dataset {dataset.root}; pass "
            "--data with the dataset the run was trained on"
        )
    slices: dict[str, list[int]] = {}
    if split.get("kind") == "slice-level":
        axis = "xyz"[recipe.slice_axis]
        for text in split.get("val_slices", []):
            case_id, _, where = str(text).rpartition(":")
            if not where.startswith(f"{axis}="):
                raise ConfigError(f"validation slice id {text!r} is not along axis {axis}")
            slices.setdefault(case_id, []).append(int(where[2:]))
    cases = []
    for case_id in ids:
        volume, _ = to_training_orientation(dataset.load_case(case_id))
        if volume.label is None:
            raise DatasetError(f"validation case {case_id} of {dataset.root} has no label map")
        mask = None
        if case_id in slices:
            mask = np.zeros(volume.shape, dtype=bool)
            index = [slice(None)] * 3
            index[recipe.slice_axis] = sorted(slices[case_id])  # type: ignore[call-overload]
            mask[tuple(index)] = True
        cases.append(_Case(case_id, volume.image, volume.label, volume.spacing, mask))
    record: dict[str, Any] = {"dataset": str(dataset.root), "split": split.get("description")}
    if slices:
        record.update(slices=sum(map(len, slices.values())), slice_ids=split["val_slices"])
    else:
        record.update(cases=len(ids), case_ids=ids)
    return cases, record


def _sample_windows(cases: Sequence[_Case], recipe: Recipe, count: int = 16) -> np.ndarray:
    """``(N, C, h, w)`` real network inputs: centre windows of slices spread over the cases."""
    assert recipe.patch_size is not None
    ph, pw = recipe.patch_size
    axis = recipe.slice_axis
    per_case = max(1, -(-count // len(cases)))
    windows = []
    for case in cases:
        n = case.image.shape[axis + 1]
        picks = np.unique(np.linspace(0, n - 1, min(per_case, n)).astype(int))
        block = case.image
        if recipe.target_spacing is not None:  # training's order: resample, then normalise
            block = resample_inplane(block, case.spacing, recipe.target_spacing, axis)
        block = np.take(normalize_volume(block, recipe), picks, axis=axis + 1)
        stack, _ = pad_to_patch(np.moveaxis(block, axis + 1, 0), (ph, pw))
        top, left = (stack.shape[2] - ph) // 2, (stack.shape[3] - pw) // 2
        windows.append(stack[:, :, top : top + ph, left : left + pw])
    return np.ascontiguousarray(np.concatenate(windows)[:count], dtype=np.float32)


def _score(
    path: Path,
    cases: Sequence[_Case],
    recipe: Recipe,
    classes: dict[str, int],
    max_batch: int,
    reference: Accuracy | None = None,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    all_slices: bool = False,
) -> tuple[Accuracy, list[np.ndarray]]:
    """Sliding-window labels of every case on a CPU backend, Dice pooled over the cases.

    A case of a slice-level split runs only its validation slices (the same labels there as
    a whole run, a fraction of the time), unless ``all_slices`` (the FP32 labels the
    post-processing rules are decided on, which look at whole volumes).

    ``reference``: the FP32 file's accuracy on the same backend (drop and agreement are
    against it); ``precision``: OpenVINO's hint (see
    :func:`medseg.export.accuracy.backend_predictor`). Returns the accuracy and each case's
    ``(X, Y, Z)`` labels.
    """
    predict = backend_predictor(path, backend, precision)
    from medseg.metrics import DiceAccumulator

    dice_acc = DiceAccumulator(classes, empty="nan")  # pooled over cases; absent: left out
    labels_out, flat = [], []
    predict_s, slices_run = 0.0, 0
    for case in cases:
        run_only = None
        if case.mask is not None and not all_slices:  # slice-level: its validation slices
            axis = recipe.slice_axis
            others = tuple(a for a in range(3) if a != axis)
            run_only = np.flatnonzero(case.mask.any(axis=others)).tolist()
        run = segment_windowed(
            case.image,
            case.spacing,
            recipe,
            predict,
            max_batch,
            len(classes) + 1,
            slices=run_only,
        )
        labels = run.labels
        predict_s += run.predict_s
        slices_run += run.num_slices if run_only is None else len(run_only)
        labels_out.append(labels)
        pred, ref = (
            (labels, case.label)
            if case.mask is None
            else (
                labels[case.mask],
                case.label[case.mask],
            )
        )
        flat.append(pred.ravel())
        dice_acc.update(pred.reshape(1, -1), ref.reshape(1, -1))
    predictions = np.concatenate(flat).astype(np.uint8)
    ms = 1000.0 * predict_s / max(slices_run, 1)
    return scored(dice_acc.pooled_dice(), predictions, reference, ms), labels_out


def export_windowed(
    loaded: Any,
    ckpt_path: Path,
    out: Path,
    options: Any,
    data_path: Path,
    on_event: EventSink,
    started: float,
) -> Manifest:
    """The body of :func:`~medseg.export.pipeline.export_bundle` for a window recipe."""
    from medseg.export.options import (
        INPUT_NAME,
        check_dataset_matches_model,
        tool_versions,
    )

    meta = loaded.meta
    recipe = Recipe.from_dict(meta["recipe"])
    spec = window_input_spec(options, meta["in_channels"], recipe, INPUT_NAME)
    dataset = NnUNetDataset.open(data_path)
    check_dataset_matches_model(data_path, dataset.spec, meta)
    classes = {k: v for k, v in dataset.spec.labels.items() if v > 0}
    split = meta.get("split")
    cases, validation = _validation_cases(dataset, split, recipe)
    # validation runs on CPU backends: the profile's opt batch, as the runtime's default there
    # (runtime.segmenter.default_batch_size; batch 32 held ~11 GB of window activations)
    window_batch = spec.batch.opt
    with atomic_dir(out, scratch=True) as tmp:
        on_event(Event("onnx.fp32", "start", "exporting FP32 ONNX, sliding-window validation..."))
        t = time.perf_counter()
        sample = _sample_windows(cases, recipe)
        fp32 = export_fp32(loaded, tmp / ONNX_FILES["fp32"], spec, sample)
        parity = fp32.parity
        fp32_acc, fp32_labels = _score(
            fp32.path, cases, recipe, classes, window_batch, all_slices=True
        )
        where = f"{len(cases)} validation case(s) on their own grids, sliding window"
        on_event(
            file_done(
                "onnx.fp32",
                "ONNX FP32",
                fp32.path,
                t,
                f"input {spec.height}x{spec.width} static, batch {spec.batch}; parity max|Δ| "
                f"{parity.max_abs_diff:.1e}; val Dice {fp32_acc.dice_mean:.4f} ({where})",
                parity=parity.to_dict(),
                dice_mean=fp32_acc.dice_mean,
            )
        )

        t = time.perf_counter()
        on_event(
            Event(
                "postprocess", "start", "post-processing decided on the FP32 validation predictions"
            )
        )
        post = decide_postprocess(
            [
                ValidationCase(c.case_id, lab, c.label, c.spacing, c.mask)
                for c, lab in zip(cases, fp32_labels, strict=True)
            ],
            classes,
            on_event,
        )
        seconds = time.perf_counter() - t
        on_event(
            Event(
                "postprocess",
                "done",
                f"post-processing rules ({seconds:.1f} s)",
                {"postprocess": post.to_dict(), "seconds": round(seconds, 3)},
            )
        )

        def score(path: Path, backend: str, precision: str, reference: Accuracy | None) -> Accuracy:
            return _score(
                path, cases, recipe, classes, window_batch, reference, backend, precision
            )[0]

        def calibrate(folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
            return _calibration_patches(folder, options, meta, recipe, classes, on_event)

        steps = run_precision_steps(tmp, fp32, fp32_acc, options, score, calibrate, on_event)
        manifest = Manifest(
            model={**loaded.record, "name": f"{dataset.spec.name}-{loaded.record['arch']}"},
            classes=dict(meta["classes"]),
            input=spec,
            output_name=OUTPUT_NAME,
            preprocessing=recipe,
            precisions=steps.precisions,
            calibration=steps.calibration,
            source={
                "checkpoint": str(ckpt_path),
                "checkpoint_sha256": file_sha256(ckpt_path),
                "dataset": meta["dataset"],
                "validation": validation,
            },
            tool_versions=tool_versions(),
            created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            orientation=meta.get("orientation") or "RAS",
            plan=meta.get("plan"),
            postprocess=post,
            backend_accuracy=steps.backend_accuracy,
        )
        manifest.save(tmp)
        summary_event(manifest, tmp, on_event)
    seconds = time.perf_counter() - started
    on_event(Event("bundle", "done", f"bundle {out} ({seconds:.0f} s)", {"bundle": str(out)}))
    return manifest


def _calibration_patches(
    folder: Path,
    options: Any,
    meta: dict[str, Any],
    recipe: Recipe,
    classes: dict[str, int],
    on_event: EventSink,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Calibration patches ``(N, C, h, w)`` from the split's training cases, written to
    ``folder``; returns them and the manifest's calibration record."""
    from medseg.calibration.slices import select_calibration_patches
    from medseg.export.options import CALIBRATION_NAME
    from medseg.plan.cases import load_prepared_cases

    assert recipe.patch_size is not None
    on_event(Event("calibration", "start", "drawing calibration patches..."))
    t = time.perf_counter()
    calib_root = NnUNetDataset.open(options.calib_data)
    split = meta.get("split") or {}
    train_ids = [c for c in split.get("train", []) if c in set(calib_root.case_ids("train"))]
    if not train_ids:  # another dataset than the run's: its training cases
        train_ids = list(calib_root.case_ids("train"))
    prepared = load_prepared_cases(calib_root, train_ids, recipe)
    # a slice-level split (one case): its validation slices never calibrate
    held_out = (
        set(map(str, split.get("val_slices") or ()))
        if split.get("kind") == "slice-level"
        else set()
    )
    with warnings.catch_warnings(record=True) as caught:  # sent as warning events
        warnings.simplefilter("always")
        calib = select_calibration_patches(
            prepared, classes, recipe.patch_size, options.calib_slices, seed=0, exclude=held_out
        )
    for warning in caught:
        on_event(Event("calibration", "warning", str(warning.message)))
    calib.save_npz(folder / CALIBRATION_NAME)
    info = {"dataset": str(options.calib_data), "file": CALIBRATION_NAME, **calib.to_manifest()}
    patches = f"{len(calib.refs)} patches"
    on_event(file_done("calibration", "calibration patches", folder / CALIBRATION_NAME, t, patches))
    return calib.images, info
